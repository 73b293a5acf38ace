package conn_test

import (
	"io"
	"log/slog"
)

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func ioReadFull(r io.Reader, p []byte) (int, error) { return io.ReadFull(r, p) }
