"""A log writer for tests: appends sequence-numbered lines to a file at a steady rate, and, like
Python's WatchedFileHandler, opens the path again when it names another file (rotation).

    python tests/writer.py PATH COUNT RATE [PAD]
"""

import os
import sys
import time


def main() -> None:
    path, count, rate = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    pad = b"x" * int(sys.argv[4] if len(sys.argv) > 4 else 60)
    chunk = 50
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    t0 = time.monotonic()
    for start in range(0, count, chunk):
        try:
            st = os.stat(path)
            mine = os.fstat(fd)
            if (st.st_dev, st.st_ino) != (mine.st_dev, mine.st_ino):
                raise FileNotFoundError
        except FileNotFoundError:
            # Rotated: open the new file once logrotate has created it (as an application told
            # by postrotate would); creating it here would race logrotate's own create.
            os.close(fd)
            while True:
                try:
                    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
                    break
                except FileNotFoundError:
                    time.sleep(0.001)
        os.write(fd, b"".join(b"seq %08d %s\n" % (i, pad)
                              for i in range(start, min(count, start + chunk))))
        ahead = (start + chunk) / rate - (time.monotonic() - t0)
        if ahead > 0:
            time.sleep(ahead)
    os.close(fd)


if __name__ == "__main__":
    main()
