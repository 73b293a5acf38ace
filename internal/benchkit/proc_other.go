//go:build !linux

package benchkit

import (
	"os"
	"syscall"
)

func childAttr() *syscall.SysProcAttr { return nil }

func killGroup(p *os.Process) { p.Kill() }
