"""The HTML report: ``collect.py`` gathers scores, per-image figures and run records per
prediction folder; ``charts.py`` draws them as inline SVG; ``page.py`` writes a self-contained
folder (index.html and thumbnails) that opens from file:// without a network."""
