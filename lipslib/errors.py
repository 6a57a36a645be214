"""The one exception type users see: its message is a single line saying what, where and how to fix."""


class LipsError(Exception):
    """Bad input or a missing resource, raised before any long work where it can be. Its message is one line:
    what is wrong, where, and how to fix it. The CLI prints the message alone and exits 2.

    Examples:
        >>> import lipslib as L
        >>> try:
        ...     L.load_params(None, overrides={"schedule.target_gflop": 3.0})
        ... except L.LipsError as e:
        ...     print(str(e).split(";")[0])
        unknown key 'schedule.target_gflop' (did you mean 'target_gflops'?)
    """


def first_line(e: BaseException) -> str:
    """The first non-blank line of an exception's message (Ultralytics puts what is wrong first and hints
    after it), without its decorations; the exception's type when the message is empty."""
    for line in str(e).splitlines():
        line = line.replace("❌", "").strip()
        if line:
            return line
    return type(e).__name__


def exit_code(prog: str, run) -> int:
    """Runs `run()` for a command-line program `prog`: 0 when it returns; a LipsError or an OSError (a file it
    reads or writes, named) becomes one line on stderr and 2, Ctrl-C one line and 130 — never a traceback. A
    reader that stops early (`lips info … | head -1`) is no error: what it read is what it wanted."""
    import os
    import sys

    try:
        run()
        sys.stdout.flush()  # here, so that a closed pipe is seen below and not at the interpreter's exit
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the exit's own flush goes nowhere
        return 0
    except LipsError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except OSError as e:
        where = f" ({e.filename})" if e.filename else ""
        print(f"{prog}: error: {e.strerror or e}{where}", file=sys.stderr)
        return 2
    return 0
