"""Learning companion: our own binary keypoint descriptor and place-recognition embedding.

Training (:mod:`~slam.learn.models`, :mod:`~slam.learn.losses`, :mod:`~slam.learn.muon`,
:mod:`~slam.learn.tasks`, :mod:`~slam.learn.train`, :mod:`~slam.learn.export`) needs
PyTorch (the ``train`` extra) and imports it itself; nothing else in the package imports
torch. Data (:mod:`~slam.learn.data`, :mod:`~slam.learn.datasets`), metrics
(:mod:`~slam.learn.evaluate`), the benchmark (:mod:`~slam.learn.bench`) and plots
(:mod:`~slam.learn.plot`) are numpy/OpenCV only. See ``docs/learning.md``.

This package is a companion: it imports the runtime (the patch sampler
:mod:`slam.features.patches`, the embedding input :mod:`slam.place.embedding_input`,
the ONNX runners), and nothing in the runtime imports it.
"""
