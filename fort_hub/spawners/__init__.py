"""fort-hub spawners: group-filtered image profiles and per-user AWS identity.

- ``fort-kubernetes``: :class:`fort_hub.spawners.kubernetes.FortKubeSpawner` (Z2JH).
- ``fort-local``: :class:`fort_hub.spawners.local.FortLocalSpawner` (local processes).

The pure pieces live in :mod:`.profiles`, :mod:`.identity` and :mod:`.manifests`.
"""
