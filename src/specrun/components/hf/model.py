"""``model hf_causal_lm { path "tiny" }``: a transformers causal LM, built locally.

``path`` is a config.json (a fresh model from the config) or a save_pretrained
folder (its safetensors weights, unless ``weights false``). A fresh model takes
the vocabulary size the data announces; loaded weights must fit it.
"""

from __future__ import annotations

from specrun.components.api import ComponentError, Context
from specrun.components.hf import local_path, need
from specrun.components.own.model import OwnModel


def build_hf_causal_lm(params: dict, info: dict, ctx: Context):
    what = "model hf_causal_lm"
    transformers = need(what)
    path = local_path(ctx, params["path"], what)
    folder = path if path.is_dir() else path.parent
    config_file = path / "config.json" if path.is_dir() else path
    if not config_file.is_file():
        raise ComponentError(f"{what}: {params['path']} holds no config.json")
    try:
        config = transformers.AutoConfig.from_pretrained(str(config_file), local_files_only=True,
                                                         trust_remote_code=False)
    except (OSError, ValueError, KeyError) as exc:
        raise ComponentError(f"{what}: cannot read {config_file}: {str(exc).splitlines()[0]}") from None
    config.use_cache = False  # training: no key/value cache in the outputs
    vocab = info.get("vocab_size")
    weights = params.get("weights", True) and path.is_dir() and any(folder.glob("*.safetensors"))
    if weights:
        if vocab is not None and vocab > config.vocab_size:
            raise ComponentError(f"{what}: the tokenizer has {vocab} tokens, the weights in {params['path']} "
                                 f"only {config.vocab_size}")
        model = transformers.AutoModelForCausalLM.from_pretrained(
            str(folder), config=config, local_files_only=True, use_safetensors=True, trust_remote_code=False)
    else:
        if vocab is not None:
            config.vocab_size = vocab
        model = transformers.AutoModelForCausalLM.from_config(config, trust_remote_code=False)
    return OwnModel(model, "hf_causal_lm", None)
