"""tinyrcnn.utils.check_answer: the check cells of the chapters' exercises."""
from tinyrcnn.utils import check_answer


def test_check_answer_tells_correct_unanswered_and_wrong(capsys):
    assert check_answer([[1, 2], [3, 4.0004]], [[1, 2], [3, 4]], 'hint') is True
    assert capsys.readouterr().out == 'correct\n'
    assert check_answer(None, 3, 'count the anchors') is False
    assert capsys.readouterr().out == 'not answered yet: count the anchors\n'
    assert check_answer(3.1, 3, 'h') is False                       # outside the tolerance
    assert check_answer([1, 2], [[1, 2]], 'h') is False             # the shape counts
    assert check_answer('five', 5, 'h') is False                    # never raises
    assert capsys.readouterr().out == 'not yet: h\n' * 3
    assert check_answer(' ACD ', 'acd', 'h') is True                # strings: case and spaces
    assert check_answer(5, 'five', 'h') is False
