"""Keyword query building, name tokenizing and the fusion arithmetic (xmr.fusion, xmr.catalogue.keywords)."""

from __future__ import annotations

import pytest

from xmr.catalogue.keywords import fts_query, name_words
from xmr.filters import haversine_km, parse_near
from xmr.fusion import KEYWORD_SCORE, fuse, fuse_rrf, keyword_scores
from xmr.query import keyword_text


def test_names_become_words() -> None:
    assert name_words("harbour-invoice.pdf") == "harbour invoice pdf"
    assert name_words("HarbourInvoice2023_final.PDF") == "Harbour Invoice 2023 final PDF"
    assert name_words("IMG_0042.jpg") == "IMG 0042 jpg"


def test_fts_queries_quote_words_and_keep_phrases() -> None:
    assert fts_query("harbour invoice") == '"harbour" OR "invoice"'
    assert fts_query('"harbour master" log') == '"harbour master" OR "log"'
    # FTS5 operators and punctuation in the box are words, not syntax
    assert fts_query("NOT AND * (x)") == '"not" OR "and" OR "x"'
    assert fts_query("  -- ") is None


def test_the_keyword_side_of_a_query_keeps_positive_terms_and_phrases() -> None:
    assert keyword_text('"harbour master" + boats - "people"') == '"harbour master" boats'
    assert keyword_text("2:sunset + -1:city") == "sunset"


def test_keyword_scores_are_relative_to_the_best_match() -> None:
    scores = keyword_scores([("a", 8.0), ("b", 4.0)])
    assert scores == {"a": KEYWORD_SCORE, "b": KEYWORD_SCORE / 2}
    assert keyword_scores([]) == {}


def test_a_file_matched_both_ways_ranks_above_either_alone() -> None:
    semantic = {"both": 3.0, "meaning": 3.0, "name": -0.5, "other": 1.0}
    keyword = keyword_scores([("both", 5.0), ("name", 5.0)])
    for fused in (fuse(semantic, keyword), fuse_rrf(semantic, keyword)):
        order = sorted(fused, key=lambda p: -fused[p])
        assert order[0] == "both"
        assert fused["both"] > max(fused["meaning"], fused["name"])
    calibrated = fuse(semantic, keyword)
    assert calibrated["name"] == KEYWORD_SCORE  # a name match is not pulled down by a negative semantic score
    assert calibrated["other"] == 1.0  # files without a keyword match keep their semantic score


def test_haversine_and_near() -> None:
    assert haversine_km(52.3702, 4.8952, 52.3702, 4.8952) == 0
    # Amsterdam - Paris, about 430 km
    assert haversine_km(52.3702, 4.8952, 48.8566, 2.3522) == pytest.approx(430, abs=5)
    assert parse_near("52.37,4.89") == (52.37, 4.89, 1.0)
    assert parse_near("52.37, 4.89, 2.5") == (52.37, 4.89, 2.5)
