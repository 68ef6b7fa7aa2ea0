"""The web dashboard of `shepard serve`: server-rendered pages over the service layer, live
parts by server-sent events, assets shipped in the package (no CDN, no Node.js).

`router(flock, settings)` is all `create_app` needs; docs/dashboard.md shows the pages.
"""

from shepard.web.routes import router

__all__ = ["router"]
