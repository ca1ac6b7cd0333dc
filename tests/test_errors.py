"""The error tree (`chunkwise.errors`): exit codes, where an error happened, pickling."""

import errno
import pickle

import pytest

from chunkwise import errors as e


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (e.SetupError("bad flag"), 2),
        (e.InputError("in.parquet: no rows"), 2),
        (e.UnsafePathError("'../x' would write outside"), 2),
        (e.RunLocked("run t is in use"), 2),
        (e.ConfigError("bad host"), 2),
        (e.StorageError("disk full"), 2),
        (e.FatalError("stop"), 2),
        (e.ModelNotFound("gone", 404), 2),
        (e.BadRequest("bad option", 400), 2),
        (e.RunInterrupted("stopped"), 130),
        (KeyboardInterrupt(), 130),
        (e.ChunksUnfinished("3 chunks did not finish"), 1),
        (e.IncompleteRun("no checkpoint"), 1),
        (e.ServerUnavailable("down"), 1),
        (e.ServerBusy("busy", 503), 1),
        (e.ContextExceeded("too long", 400), 1),
        (OSError(errno.ENOSPC, "No space left on device"), 2),
        (OSError(errno.EROFS, "Read-only file system"), 2),
        (OSError(errno.EACCES, "Permission denied"), 1),
        (RuntimeError("a bug"), 1),
    ],
)
def test_exit_code_of_each_ending(exc, code):
    assert e.exit_code_for(exc) == code


def test_a_finished_run_exits_0_only_when_every_request_was_answered():
    assert e.exit_code_for(None) == e.EXIT_OK
    assert e.exit_code_for(None, unanswered=1) == e.EXIT_FAILED


def test_the_tree():
    for setup in (e.InputError, e.UnsafePathError, e.RunLocked, e.ConfigError):
        assert issubclass(setup, e.SetupError)
    for boundary in (e.ConfigError, e.ServerUnavailable, e.RequestTimeout, e.ServerBusy, e.IncompleteResponse,
                     e.ContextExceeded, e.ModelNotFound, e.BadRequest):
        assert issubclass(boundary, e.LLMError)
    assert not issubclass(e.ContextExceeded, (e.TransientError, e.FatalError))
    assert issubclass(e.ServerBusy, e.ServerError) and issubclass(e.ServerError, e.TransientError)
    assert issubclass(e.SetupError, ValueError)  # callers that caught the old ValueError still do
    assert all(issubclass(c, e.ChunkwiseError) for c in (e.SetupError, e.StorageError, e.RunInterrupted,
                                                          e.ChunksUnfinished, e.IncompleteRun, e.LLMError))


def test_message_names_chunk_and_row_once_known():
    exc = e.ModelNotFound("model 'm' not found; pull it", 404)
    assert str(exc) == "model 'm' not found; pull it"
    assert exc.at(row=17) is exc
    exc.at(chunk="chunk-0002 [16-23]", row=99)  # the first row recorded is kept
    assert str(exc) == "chunk-0002 [16-23], input row 17: model 'm' not found; pull it"
    assert str(e.StorageError("disk full").at(chunk="chunk-0001 [8-15]")) == "chunk-0001 [8-15]: disk full"


@pytest.mark.parametrize(
    "exc",
    [e.ModelNotFound("gone", 404), e.ServerBusy("busy", 503), e.ConfigError("bad"), e.InputError("no rows"),
     e.RunInterrupted("stop"), e.StorageError("full"), e.ChunksUnfinished("2 chunks")],
)
def test_errors_survive_pickling_with_where_they_happened(exc):
    exc.at(chunk="chunk-0000 [0-7]", row=3)
    clone = pickle.loads(pickle.dumps(exc))
    assert type(clone) is type(exc) and clone.args == exc.args and str(clone) == str(exc)
    assert (clone.chunk, clone.row, clone.exit_code) == ("chunk-0000 [0-7]", 3, exc.exit_code)
    if isinstance(exc, e.LLMError):
        assert clone.status == exc.status
