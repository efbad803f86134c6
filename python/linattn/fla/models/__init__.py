"""fla.models names: GLA, DeltaNet, GatedDeltaNet and MoM configs and causal LMs over linattn's layers, with fla 0.5.2's
model types, config fields and module names (`from linattn.fla.models import GatedDeltaNetForCausalLM`). Importing
this module registers them with transformers' Auto classes unless those model types are registered already (by
fla itself, say); fla registers with exist_ok, so importing fla afterwards points the Auto classes at fla's.
The linattn classes stay importable from here either way."""
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from .configs import DeltaNetConfig, GatedDeltaNetConfig, GLAConfig, MomConfig
from .modeling import (DeltaNetForCausalLM, DeltaNetModel, GatedDeltaNetForCausalLM, GatedDeltaNetModel,
                       GLAForCausalLM, GLAModel, MomForCausalLM, MomModel)

for _config, _model, _lm in ((GLAConfig, GLAModel, GLAForCausalLM),
                             (DeltaNetConfig, DeltaNetModel, DeltaNetForCausalLM),
                             (GatedDeltaNetConfig, GatedDeltaNetModel, GatedDeltaNetForCausalLM),
                             (MomConfig, MomModel, MomForCausalLM)):
    try:
        AutoConfig.register(_config.model_type, _config)
    except ValueError:  # the model type is taken (fla is installed and imported): leave its classes in place
        continue
    AutoModel.register(_config, _model)
    AutoModelForCausalLM.register(_config, _lm)

__all__ = ["DeltaNetConfig", "DeltaNetForCausalLM", "DeltaNetModel", "GLAConfig", "GLAForCausalLM", "GLAModel",
           "GatedDeltaNetConfig", "GatedDeltaNetForCausalLM", "GatedDeltaNetModel", "MomConfig", "MomForCausalLM",
           "MomModel"]
