"""explainable-ser: LLM-empowered fine-grained speech descriptors for explainable SER.

``explainable_ser.from_pretrained(DIR)`` loads a model exported with
``python -m explainable_ser.export`` (see :mod:`explainable_ser.serving.inference`)."""


def from_pretrained(path, device: str | None = None):
    """An :class:`~explainable_ser.serving.inference.Explainer` from an exported directory."""
    # Imported on call: `import explainable_ser` stays free of torch for the light CLIs.
    from explainable_ser.serving.inference import Explainer

    return Explainer.from_export(path, device=device)
