"""The steps of one search, each a small part that ``xmr.search`` puts together:

* :mod:`xmr.retrieval.types`: the options, hits, results and response (plain data);
* :mod:`xmr.retrieval.embed`: the query's vectors per space (encoders, query cache, bridge);
* :mod:`xmr.retrieval.groups`: which (space, segment kind) groups to search, each group's
  candidates, calibration and vector-index search, with the answer cache;
* :mod:`xmr.retrieval.ranking`: hits collapsed to one result per file, keyword fusion, date
  sort and the per-result explanation.
"""
