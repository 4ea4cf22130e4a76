"""``task hf_text { train "data/train.jsonl"; tokenizer "tok" }``: local text through
``datasets``, tokenised by a local tokenizer, packed into sequences.

Documents are tokenised, joined with the end-of-text token, and cut into
``seq_len + 1`` windows: ``input_ids`` is a window without its last token,
``targets`` without its first. The windows form a map-style dataset behind
specrun's seeded, resumable sampler (``specrun.components.own.data``).
"""

from __future__ import annotations

import torch

from specrun.components.api import ComponentError, Context
from specrun.components.hf import local_path, need
from specrun.components.own.data import DatasetTask

FORMATS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet", ".txt": "text", ".text": "text"}


class Windows(torch.utils.data.Dataset):
    def __init__(self, ids: torch.Tensor, seq_len: int):
        self.ids, self.seq_len = ids, seq_len

    def __len__(self):
        return max(0, (len(self.ids) - 1) // self.seq_len)

    def __getitem__(self, i):
        chunk = self.ids[i * self.seq_len: (i + 1) * self.seq_len + 1]
        return {"input_ids": chunk[:-1], "targets": chunk[1:]}


class HFText(DatasetTask):
    def __init__(self, params: dict, ctx: Context):
        super().__init__(ctx, "task hf_text")
        need(self.what)
        try:
            import datasets  # noqa: F401
        except ImportError:
            raise ComponentError(f"{self.what} needs Hugging Face datasets: pip install 'specrun[hf]'") from None
        self.params = params
        self.tokenizer = self._tokenizer(params["tokenizer"])
        train = self._windows(params["train"])
        val = self._windows(params["val"]) if params.get("val") else None
        self.use(train, val)

    def _tokenizer(self, written: str):
        from transformers import AutoTokenizer, PreTrainedTokenizerFast

        path = local_path(self.ctx, written, self.what)
        try:
            if path.is_file():  # a tokenizers JSON file
                return PreTrainedTokenizerFast(tokenizer_file=str(path))
            return AutoTokenizer.from_pretrained(str(path), local_files_only=True, trust_remote_code=False)
        except (OSError, ValueError) as exc:
            raise ComponentError(f"{self.what}: cannot load the tokenizer {written}: "
                                 f"{str(exc).splitlines()[0]}") from None

    def _windows(self, written: str) -> Windows:
        import datasets

        path = local_path(self.ctx, written, self.what)
        kind = self.params.get("format") or FORMATS.get(path.suffix)
        if kind is None:
            raise ComponentError(f"{self.what}: cannot tell the format of {written}; set `format` "
                                 f"(one of {', '.join(sorted(set(FORMATS.values())))})")
        field = self.params["text_field"] if kind != "text" else "text"
        try:
            table = datasets.load_dataset(kind, data_files=str(path), split="train",
                                          cache_dir=str(self.ctx.extras.get("hf_cache") or self.ctx.cache_dir))
        except Exception as exc:  # datasets raises many kinds for a malformed file
            raise ComponentError(f"{self.what}: cannot read {written} as {kind}: {str(exc).splitlines()[0]}") \
                from None
        if field not in table.column_names:
            raise ComponentError(f"{self.what}: {written} has no column '{field}' (columns: "
                                 f"{', '.join(table.column_names)}); set text_field")
        eos = self.tokenizer.eos_token_id
        ids: list[int] = []
        for text in table[field]:
            ids += self.tokenizer(text or "", add_special_tokens=False)["input_ids"]
            if eos is not None:
                ids.append(eos)
        windows = Windows(torch.tensor(ids, dtype=torch.long), self.params["seq_len"])
        if len(windows) == 0:
            raise ComponentError(f"{self.what}: {written} gives {len(ids)} tokens, fewer than one sequence of "
                                 f"{self.params['seq_len']}")
        return windows

    def model_info(self) -> dict:
        return {"vocab_size": len(self.tokenizer), "seq_len": self.params["seq_len"]}


def build_hf_text(params: dict, ctx: Context) -> HFText:
    return HFText(params, ctx)
