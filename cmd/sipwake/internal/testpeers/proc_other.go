//go:build unix && !linux

package testpeers

import "syscall"

// sysProcAttr puts a peer in its own process group (Stop signals the group).
func sysProcAttr(string) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
