"""Training of the fraud classifier: data, model, threshold, report and ONNX export.

Run it as ``fraud-train`` (or ``python -m trainer``). Only ``trainer.synthetic`` is
free of the training extras (TensorFlow, pandas, scikit-learn), so the worker side
can import it.
"""
