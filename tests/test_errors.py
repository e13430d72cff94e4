"""The one-line errors: a builder's list of problems comes out in one order, numbers by value."""
import pickle

from pisa_jax.errors import DataError


def test_data_error_lists_its_problems_sorted():
    problems = [("videos/10.mp4", "too short"), ("videos/2.mp4", "no audio stream"),
                ("annotations.json", "record 10: bad level"), ("annotations.json", "record 2: x"),
                ("videos/2.mp4", "crop box outside the frame")]
    error = DataError(problems)
    assert [line.strip() for line in str(error).splitlines()[1:]] == [
        "annotations.json: record 2: x",            # same path: by the problem, numbers too
        "annotations.json: record 10: bad level",
        "videos/2.mp4: crop box outside the frame",  # 2 before 10: numbers by value
        "videos/2.mp4: no audio stream",
        "videos/10.mp4: too short"]
    assert str(error).splitlines()[0] == "5 problem(s) with the input data:"
    # the same list whatever order the builder's workers found them in
    assert str(DataError(reversed(problems))) == str(error)
    assert str(pickle.loads(pickle.dumps(error))) == str(error)   # crosses process boundaries
