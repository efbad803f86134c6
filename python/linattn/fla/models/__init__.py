"""fla.models names: GLA, DeltaNet and GatedDeltaNet configs and causal LMs over linattn's layers, with fla 0.5.2's
model types, config fields and module names (`from linattn.fla.models import GatedDeltaNetForCausalLM`). Importing
this module registers them with transformers' Auto classes unless those model types are registered already (by
fla itself, say)."""
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from .configs import DeltaNetConfig, GatedDeltaNetConfig, GLAConfig
from .modeling import (DeltaNetForCausalLM, DeltaNetModel, GatedDeltaNetForCausalLM, GatedDeltaNetModel,
                       GLAForCausalLM, GLAModel)

for _config, _model, _lm in ((GLAConfig, GLAModel, GLAForCausalLM), (DeltaNetConfig, DeltaNetModel, DeltaNetForCausalLM),
                             (GatedDeltaNetConfig, GatedDeltaNetModel, GatedDeltaNetForCausalLM)):
    try:
        AutoConfig.register(_config.model_type, _config)
    except ValueError:  # the model type is taken (fla is installed and imported): leave its classes in place
        continue
    AutoModel.register(_config, _model)
    AutoModelForCausalLM.register(_config, _lm)

__all__ = ["DeltaNetConfig", "DeltaNetForCausalLM", "DeltaNetModel", "GLAConfig", "GLAForCausalLM", "GLAModel",
           "GatedDeltaNetConfig", "GatedDeltaNetForCausalLM", "GatedDeltaNetModel"]
