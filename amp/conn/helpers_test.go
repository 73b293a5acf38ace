package conn_test

import (
	"github.com/ampmux/ampmux/internal/pki"
	"io"
	"log/slog"
)

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func ioReadFull(r io.Reader, p []byte) (int, error) { return io.ReadFull(r, p) }

func pkiNewCA() (*pki.CA, error) { return pki.NewCA("fuzz CA") }
