"""The served models: which stored version each spec gets, loading them, and readiness.

One ServedModels per worker. It loads every model of the spec registry in a background
thread, so /livez answers at once and /readyz turns 200 only once every model is loaded
and warmed up; until then, and after a failed load, a model's routes answer 503 with the
reason (the log has the traceback).
"""

from __future__ import annotations

import gc
import logging
import os
import threading
import time
from typing import Any

from service.batching import AfterBatch, ModelBatcher
from service.drift import DriftGauges, DriftMonitor, Profile, configured_window
from service.errors import NotFound, NotReady
from service.instruments import Instruments
from service.runtime import cpu_count, load, warm_up
from service.shadow import Shadow, ShadowMetrics, configured_fraction, configured_queue
from service.specs import SPECS
from service.versions import NoServableModel, served_tag, shadow_tag, silently_wrong_in_image

logger = logging.getLogger("bentoml.service.model_serving")

ADAPTIVE_BATCHING = os.environ.get("ADAPTIVE_BATCHING", "on").lower() not in ("off", "0", "false")
"""ADAPTIVE_BATCHING=off serves every request with its own model call (for comparisons)."""


def ref_attribute(name: str, shadow: bool = False) -> str:
    return f"{name}_shadow_model" if shadow else f"{name}_model"


def add_model_refs(service_class: type) -> None:
    """One `bentoml.models.BentoModel` per spec at class scope (`iris_model`, ...), and one
    per shadowed model (`iris_shadow_model`): so `bentoml build` packages exactly the
    served versions, and the challenger only when shadowing is configured
    (service/versions.py says which), and the worker finds them. NoServableModel stops
    `bentoml serve` and `bentoml build` at start, saying what to train or pin."""
    import bentoml

    unservable = []
    for name in SPECS:
        try:
            served = served_tag(name)
            setattr(service_class, ref_attribute(name), bentoml.models.BentoModel(served))
            if (shadow := shadow_tag(name)) is not None:
                try:
                    stored_shadow = bentoml.models.get(shadow)
                except bentoml.exceptions.NotFound:  # the shadow never stops serving: say so, go on
                    logger.warning("%s_SHADOW_VERSION: no %s in the store: not shadowing", name.upper(), shadow)
                    continue
                if (reason := silently_wrong_in_image(name, bentoml.models.get(served), stored_shadow)) is not None:
                    raise NoServableModel(reason)
                setattr(service_class, ref_attribute(name, shadow=True), bentoml.models.BentoModel(shadow))
        except NoServableModel as exc:
            unservable.append(str(exc))
    if unservable:
        raise NoServableModel("; ".join(unservable))


class ServedModels:
    """Every spec's model, loaded from the service class's references."""

    def __init__(self, service: Any, instruments: Instruments) -> None:
        self._refs = {name: getattr(service, ref_attribute(name)) for name in SPECS}
        self._shadow_refs = {name: getattr(service, ref_attribute(name, shadow=True)) for name in SPECS
                             if hasattr(service, ref_attribute(name, shadow=True))}
        self._instruments = instruments
        self._batchers: dict[str, ModelBatcher] = {}
        self._monitors: dict[str, DriftMonitor] = {}
        self._shadows: dict[str, Shadow] = {}
        self._load_error: str | None = None
        self.drift_window = configured_window()
        # The CNN (LiteRT) gets every CPU of the container; the array models run
        # single-threaded (service/runtime.py, one_thread_per_call).
        self.threads = cpu_count()

    def start_loading(self) -> None:
        threading.Thread(target=self._load_all, name="load-models", daemon=True).start()

    @property
    def ready(self) -> bool:
        return len(self._batchers) == len(SPECS)

    def not_ready_reason(self) -> str:
        return self._load_error or "models are still loading; see /readyz"

    def batcher(self, name: str, version: str | None = None) -> ModelBatcher:
        """The named model's batcher; 404 for an unknown model or version, 503 before it is loaded."""
        if name not in SPECS:
            raise NotFound(f"unknown model {name!r}; served: {sorted(SPECS)}")
        batcher = self._batchers.get(name)
        if batcher is None:
            raise NotReady(self.not_ready_reason())
        if version is not None and version != batcher.model.version:
            raise NotFound(f"model {name!r} has no version {version!r}; serving {batcher.model.version!r}")
        return batcher

    def all(self) -> list[ModelBatcher]:
        """Every model's batcher, in the registry's order; 503 before they are all loaded."""
        if not self.ready:
            raise NotReady(self.not_ready_reason())
        return [self._batchers[name] for name in SPECS]

    def drift(self, name: str) -> DriftMonitor:
        self.batcher(name)  # 404 or 503 first
        if name not in self._monitors:
            raise NotFound("drift monitoring is off (DRIFT_WINDOW=0)")
        return self._monitors[name]

    def shadow(self, name: str) -> Shadow:
        self.batcher(name)  # 404 or 503 first
        if name not in self._shadows:
            raise NotFound(f"shadowing is off for {name} ({name.upper()}_SHADOW_VERSION is not set)")
        return self._shadows[name]

    def shadow_tags(self) -> dict[str, str]:
        """The shadowed models: name -> the challenger's tag."""
        return {name: shadow.challenger.tag for name, shadow in self._shadows.items()}

    def _load_shadow(self, champion: Any, fraction: float, queue_rows: int,
                     metrics: ShadowMetrics | None) -> Shadow | None:
        """The model's shadow, or None: a challenger that fails to load is logged and the
        model served without it (the shadow never takes serving down). One CPU thread: the
        shadow never takes the champion's cores."""
        name = champion.spec.name
        if name not in self._shadow_refs:
            return None
        try:
            challenger = load(SPECS[name], self._shadow_refs[name], threads=1)
            warm_up(challenger)
        except Exception:  # noqa: BLE001 - logged with its traceback; serving goes on
            logger.exception("the shadow of %s failed to load: serving without it", name)
            return None
        return Shadow(champion, challenger, fraction, queue_rows, metrics)

    def _load_all(self) -> None:
        try:
            gauges = DriftGauges() if self.drift_window else None
            shadow_metrics = ShadowMetrics() if self._shadow_refs else None
            fraction, queue_rows = (configured_fraction(), configured_queue()) if self._shadow_refs else (1.0, 1)
            batchers, monitors, shadows = {}, {}, {}
            for name, ref in self._refs.items():
                started = time.perf_counter()
                model = load(SPECS[name], ref, self.threads)  # class-scope refs resolve to stored models
                hooks: list[AfterBatch] = []
                if gauges is not None:
                    monitors[name] = DriftMonitor(model.spec, Profile.of_model(model.tag, model.metadata),
                                                  self.drift_window, gauges.publish)
                    hooks.append(monitors[name].observe)
                loaded = time.perf_counter()
                warm_up(model)
                shadow = self._load_shadow(model, fraction, queue_rows, shadow_metrics)
                if shadow is not None:
                    shadows[name] = shadow
                    hooks.append(shadow.offer)
                batcher = ModelBatcher(model, self._instruments.observe_batch, enabled=ADAPTIVE_BATCHING,
                                       after_batch=hooks)
                if shadow is not None:
                    shadow.give_way_to(batcher.busy)
                batchers[name] = batcher
                logger.info("loaded %s in %.3f s, warmed up in %.3f s%s", model.tag, loaded - started,
                            time.perf_counter() - loaded,
                            f"; shadowed by {shadows[name].challenger.tag}" if name in shadows else "")
            # Move everything loaded so far out of the collector's sight: full collections
            # then walk only per-request objects, not the models' object graphs.
            gc.collect()
            gc.freeze()
            self._monitors = monitors
            self._shadows = shadows
            self._batchers = batchers
        except Exception as exc:  # noqa: BLE001 - reported by every 503 and the log
            logger.exception("loading the models failed")
            self._load_error = f"{type(exc).__name__}: {exc}"
