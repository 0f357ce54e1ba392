"""Prediction back ends: one signature call for many concurrent requests (batch mode), and the naive Keras baseline."""

from __future__ import annotations

import asyncio
import concurrent.futures

import numpy as np

from trainer.predictor import Predictor

# Upper bound on instances coalesced into one signature call in batch mode.
MAX_BATCH_INSTANCES = 8192


class Batcher:
    """Coalesces validated columns from concurrent requests into single signature calls."""

    def __init__(self, model: Predictor):
        self.model = model
        self.queue: asyncio.Queue = asyncio.Queue()
        self.executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="taxifare-predict")
        self.task: asyncio.Task | None = None
        self.calls = 0
        self.instances = 0

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def predict(self, columns: dict[str, np.ndarray], count: int) -> np.ndarray:
        future = asyncio.get_running_loop().create_future()
        self.queue.put_nowait((columns, count, future))
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            items = [await self.queue.get()]
            total = items[0][1]
            while total < MAX_BATCH_INSTANCES and not self.queue.empty():
                item = self.queue.get_nowait()
                items.append(item)
                total += item[1]
            if len(items) == 1:
                columns = items[0][0]
            else:
                columns = {name: np.concatenate([item[0][name] for item in items]) for name in items[0][0]}
            try:
                fares = await loop.run_in_executor(self.executor, self.model.predict_columns, columns)
            except Exception as exc:  # noqa: BLE001 — a model failure: every waiting request gets a 500
                for _, _, future in items:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self.calls += 1
            self.instances += total
            start = 0
            for _, count, future in items:
                if not future.done():  # the client may have gone away
                    future.set_result(fares[start : start + count])
                start += count

    def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
        self.executor.shutdown(wait=False, cancel_futures=True)


class KerasPredict:
    """The naive baseline: the SavedModel wrapped as a Keras model, ``model.predict`` per request."""

    def __init__(self, model: Predictor):
        import keras

        signature = model.signature
        output_key = model.output_key

        class SavedModelWrapper(keras.Model):
            def call(self, inputs):
                return signature(**inputs)[output_key]

        self.model = SavedModelWrapper()

    def __call__(self, columns: dict[str, np.ndarray]) -> np.ndarray:
        return np.asarray(self.model.predict(columns, verbose=0)).reshape(-1)
