"""What the apps share, below all of them: the error services refuse with,
the parsing of client addresses and the protocol's numbers (close codes,
lengths) that the terminal client shares too. It imports no app and no project
package (an import contract in `make lint` keeps it so)."""
