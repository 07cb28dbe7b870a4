"""The paper's figures, drawn from a store's tables (never from the model).

    import tnstore
    tnstore.figures.status(store)                                 # which figures the store can draw (Arrow)
    tnstore.figures.plot(store, "pca", "figs/", layers=[0, 8, 16])  # -> PlotResult(written=[figs/pca.png])
    tnstore.figures.plot(store, "all", "figs/", fmt="svg")
    [d.figure for d in tnstore.figures.draw(store, "tn-layers", types=[1])]   # matplotlib Figures, unsaved
    tnstore.figures.latent.pca(table)                             # the pure function: rows -> Figure

Modules: `style` (colours, axes, titles, fonts' use), `fonts` (the packaged CJK font), one module per figure
family (`latent`, `neurons`, `deactivation`, `evaluation`: pure functions from Arrow/Polars rows to a Figure),
`registry` (figure types, the tables each reads and the command that makes them) and `output` (files).
Importing this package loads no plotting library; matplotlib is imported when a figure is drawn.
"""
from importlib import import_module as _import_module

_PUBLIC = {
    "plot": ("tnstore.figures.output", "plot"),
    "save": ("tnstore.figures.output", "save"),
    "draw_table": ("tnstore.figures.output", "draw_table"),
    "PlotResult": ("tnstore.figures.output", "PlotResult"),
    "FORMATS": ("tnstore.figures.output", "FORMATS"),
    "draw": ("tnstore.figures.registry", "draw"),
    "status": ("tnstore.figures.registry", "status"),
    "figure_types": ("tnstore.figures.registry", "figure_types"),
    "figure_type": ("tnstore.figures.registry", "figure_type"),
    "MissingTable": ("tnstore.figures.registry", "MissingTable"),
}
_MODULES = ("style", "fonts", "frames", "latent", "neurons", "deactivation", "evaluation", "registry", "output")
__all__ = sorted(_PUBLIC) + list(_MODULES)


def __getattr__(name: str):
    if name in _MODULES:
        return _import_module(f"tnstore.figures.{name}")
    if name not in _PUBLIC:
        raise AttributeError(f"module 'tnstore.figures' has no attribute {name!r}")
    module, attribute = _PUBLIC[name]
    value = getattr(_import_module(module), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
