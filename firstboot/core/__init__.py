"""The bottom layer every other part stands on: errors, running commands, files,
paths, the config model, the step contract and waiting. It imports nothing else of arkbox."""
