"""The FER+ majority-vote rule on hand-made vote rows (column order neutral..contempt, unknown, NF)."""

import pytest

from grefel.data.raw.ferplus import VOTE_COLUMNS, ferplus_majority


def row(**votes):
    return [votes.get(c, 0) for c in VOTE_COLUMNS]


@pytest.mark.parametrize(
    "votes, label",
    [
        (row(neutral=10), 0),
        (row(happiness=6, surprise=4), 1),  # 6 > 5
        (row(happiness=5, surprise=5), None),  # tie: neither is more than half
        (row(happiness=5, surprise=4, fear=1), 1),  # single vote removed: 5 > 4.5
        (row(sadness=4, anger=3, disgust=3), None),  # 4 is not more than 5
        (row(contempt=2), 7),  # two votes are enough when alone
        (row(contempt=1, neutral=1, anger=1), None),  # every count is a single vote: nothing left
        (row(), None),  # no votes at all
        (row(unknown=7, neutral=3), None),  # majority unknown
        (row(NF=9, happiness=1), None),  # majority not a face
        (row(neutral=3, NF=2), 0),  # 3 > 2.5
        (row(fear=2.0, surprise=1.0), 6),  # float counts are accepted
    ],
)
def test_majority(votes, label):
    assert ferplus_majority(votes)[0] == label


def test_reasons_name_the_case():
    assert "no majority" in ferplus_majority(row(happiness=5, surprise=5))[1]
    assert "unknown" in ferplus_majority(row(unknown=8))[1]
    assert "NF" in ferplus_majority(row(NF=8))[1]
    assert "more than one vote" in ferplus_majority(row(neutral=1))[1]
    assert ferplus_majority([1, 2, 3])[0] is None


def test_empty_image_name_rows_are_skipped(tmp_path):
    import prepare_fixtures as fx

    from grefel.data.raw import open_reader
    from grefel.data.raw.base import Skip

    fx.make_ferplus(tmp_path)
    items = list(open_reader("ferplus", tmp_path).items())
    assert len(items) == len(fx.FERPLUS_ROWS)
    assert items[2] == Skip("fer2013.csv#2", "ferplus: empty Image name (not a face)")
    assert [getattr(i, "label", None) for i in items] == [r[3] for r in fx.FERPLUS_ROWS]
