"""``xmr serve``: a warm local server with a JSON API and a web page.

Modules: ``address`` (the per-index address/token file, light enough for the
CLI client), ``state`` (the warm catalogue, vector stores and encoders),
``files`` (indexed files by catalogue id, thumbnails, audio, HTTP Range),
``uploads`` (media queries: size cap, sandboxed decode, never stored),
``app`` (the Starlette application) and ``run`` (checks and uvicorn).
Importing this package imports nothing heavy.
"""
