package testpeers

import "syscall"

// sysProcAttr puts a peer in its own process group (Stop signals the group)
// and asks the kernel to kill it if the test binary dies first.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
