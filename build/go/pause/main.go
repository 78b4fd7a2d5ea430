// Command pause holds a pod's namespaces open: it does nothing until it is asked to stop
// (SIGTERM or SIGINT) and, being PID 1 of the sandbox, reaps every orphan that exits.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

// version is what `pause --version` prints; build/bootstrap checks it after each build.
const version = "carstream-pause 1.0"

func main() {
	if len(os.Args) > 1 {
		if os.Args[1] == "--version" {
			fmt.Println(version)
			return
		}
		fmt.Fprintln(os.Stderr, "usage: pause [--version]")
		os.Exit(2)
	}
	signals := make(chan os.Signal, 16)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for received := range signals {
		if received != syscall.SIGCHLD {
			return
		}
		reapChildren()
	}
}

// reapChildren collects the exit status of every child that has ended, without blocking.
func reapChildren() {
	for {
		var status syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
		if err == syscall.EINTR {
			continue
		}
		if pid <= 0 || err != nil {
			return
		}
	}
}
