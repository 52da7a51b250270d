"""The BentoML service: POST a video, get the `emotions predict` JSON back, every call logged.

Kept import-free on purpose: `emotions --help` and the `package` stage import this package
without paying for BentoML, torch or the model. The service itself lives in
``emotions.serve.service`` (``bentoml serve emotions.serve.service:EmotionService``).
"""
