// pause holds a pod's namespaces open: it sleeps until SIGINT or SIGTERM and,
// as the pod's PID 1, reaps any orphaned child that ends.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

var version = "v0.0.0" // stamped at build time with -ldflags -X main.version=...

func main() {
	if len(os.Args) > 1 && (os.Args[1] == "--version" || os.Args[1] == "-v") {
		fmt.Println("kindlab pause", version)
		return
	}
	signals := make(chan os.Signal, 8)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for sig := range signals {
		if sig != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var status syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
