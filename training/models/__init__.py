"""The classifier families: DNABERT-2 (:mod:`.dnabert2` backbone, :mod:`.heads`), DNABERT v1
over k-mers (:mod:`.dnabert1`), the one-hot baselines (:mod:`.baselines`), and
:mod:`.architectures`, which maps every variant name to its family."""
