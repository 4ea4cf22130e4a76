"""The units a quantity can carry, and what each is worth."""

BYTE_UNITS = {
    "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
    "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40,
}
TIME_UNITS = {"ms": 0.001, "s": 1.0, "min": 60.0, "h": 3600.0}
SPAN_UNITS = {"step": "steps", "steps": "steps", "epoch": "epochs", "epochs": "epochs", "%": "%",
              "micro_step": "micro_steps", "micro_steps": "micro_steps"}
