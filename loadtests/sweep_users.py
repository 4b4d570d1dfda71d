"""Closed-loop locust users, one endpoint each, for loadtests/sweep.py.

No wait time: every user has exactly one request in flight, so users = concurrency.
Payloads are the locustfile's (real data): single-record calls, the common case.
"""

from __future__ import annotations

import base64
import random

from locust import FastHttpUser, constant, task
from locustfile import IRIS, digit_images, kobe_rows, malaria_images  # same folder, on locust's path


class ClosedLoop(FastHttpUser):
    abstract = True
    wait_time = constant(0)


class IrisOnly(ClosedLoop):
    @task
    def iris(self) -> None:
        self.client.post("/iris", json={"records": [random.choice(IRIS)]}, name="/iris")


class IrisV2Only(ClosedLoop):
    @task
    def iris(self) -> None:
        row = random.choice(IRIS)
        data = [row["sepal_length"], row["sepal_width"], row["petal_length"], row["petal_width"]]
        self.client.post("/v2/models/iris/infer", name="/v2/models/iris/infer",
                         json={"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": data}]})


class KobeOnly(ClosedLoop):
    @task
    def kobe(self) -> None:
        self.client.post("/kobe", json={"records": [random.choice(kobe_rows())]}, name="/kobe")


class DigitsOnly(ClosedLoop):
    @task
    def digits(self) -> None:
        self.client.post("/digits/pixels", json={"pixels": [random.choice(digit_images())[0]]}, name="/digits/pixels")


class MalariaOnly(ClosedLoop):
    @task
    def malaria(self) -> None:
        image = random.choice(malaria_images())
        self.client.post("/malaria/base64", json={"images": [base64.b64encode(image).decode()]}, name="/malaria/base64")
