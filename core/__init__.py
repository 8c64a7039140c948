"""What the apps share, below all of them: the error type services raise
and the parsing of client addresses. It imports no app and no project
package (an import contract in `make lint` keeps it so)."""
