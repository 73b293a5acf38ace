package conn

import (
	"sync"

	"github.com/ampmux/ampmux/amp/box"
)

func newBoxPool() *sync.Pool { return &sync.Pool{New: func() any { return new(box.Box) }} }
