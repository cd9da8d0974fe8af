"""The service on Ray Serve: the same FastAPI app in every replica, spread over a Ray cluster.

* :mod:`service.ray.config`: what a deployment is made of (replicas or autoscaling, CPUs or a
  fraction of a GPU per replica, Ray's queue limits, the batching) and the Serve options it
  becomes; plain Python, no Ray import;
* :mod:`service.ray.metrics`: the Prometheus texts of every replica merged into one, each sample
  labelled with its replica;
* :mod:`service.ray.batching`: the two things a replica changes in the runtime it runs: job work
  spread over the replicas, and ``@serve.batch`` in place of the dynamic batcher (for comparison);
* :mod:`service.ray.app`: the deployments and the application builder (``serve run``, KubeRay);
* :mod:`service.ray.cli`: ``dnabert-serve ray``.

``ray[serve]`` is the optional ``ray`` extra; nothing outside this package imports Ray, and this
package is only imported when a Ray command runs. Design and operation: ``docs/ray.md``.
"""
