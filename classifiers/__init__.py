"""The wbcgen classifier suite (usable on its own: it never imports wbcgen).

>>> import classifiers
>>> classifiers.list_models()            # wnet, wnet-svm, wbcsnet, wbcsnet2, dclnn, ...
>>> model = classifiers.create_model("wnet", num_classes=5)
>>> pred = classifiers.load_run("runs/classifiers/wnet")   # a trained run folder
>>> pred.predict(images_u8)              # uint8 N×3×H×W, any size
"""
from classifiers.registry import create_model, list_models, model_args, model_class
from classifiers.runtime import UserError

__all__ = ["create_model", "list_models", "model_args", "model_class", "load_run", "Predictor", "UserError"]


def __getattr__(name):  # lazy: keep ``import classifiers`` light
    if name in ("load_run", "Predictor"):
        from classifiers import predict
        return getattr(predict, name)
    raise AttributeError(name)
