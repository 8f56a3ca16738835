"""The leaves every room may use and that import nothing of persyn above them: atomic file writes
(`atomic`), secret scrubbing (`credentials`), the user-error base class (`errors`), the machine's
dtype and core rules (`hardware`), lazy package exports (`lazy`) and progress bars (`progress`)."""
