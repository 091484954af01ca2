"""Progress bars (tqdm) for the long commands."""

from __future__ import annotations


class Bar:
    """A tqdm bar as a ``progress(done, total)`` callback for the core's long operations."""

    def __init__(self, desc: str, unit: str):
        from tqdm import tqdm

        self._tqdm = tqdm
        self.bar: tqdm | None = None
        self.desc, self.unit = desc, unit

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            self.bar = self._tqdm(total=total, desc=self.desc, unit=self.unit, dynamic_ncols=True)
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def train_progress():
    """tqdm bars for training: one per epoch, losses per task in the postfix."""
    from tqdm import tqdm

    state = {"bar": None}

    def progress(event: dict) -> None:
        if "epoch_done" in event:
            rec = event["epoch_done"]
            if state["bar"] is not None:
                state["bar"].close()
                state["bar"] = None
            val = rec.get("val", {}).get("primary")
            line = f"epoch {rec['epoch']}: {rec['images_per_s']:.1f} images/s"
            if val:
                line += "; val " + ", ".join(f"{k} {v:.2f}" for k, v in val.items())
            tqdm.write(line)
            return
        bar = state["bar"]
        if bar is None:
            bar = state["bar"] = tqdm(total=event["steps"], desc=f"epoch {event['epoch']}/{event['epochs']}",
                                      unit="step", dynamic_ncols=True)  # fmt: skip
        bar.update(event["step"] - bar.n)
        bar.set_postfix({k: f"{v:.3g}" for k, v in event["loss"].items()}, refresh=False)

    return progress
