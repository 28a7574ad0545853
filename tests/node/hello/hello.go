// The one program of the node test's images: the pod sandbox's pause process and the pulled
// application alike. It prints its name (the application's log line proves it ran) and waits for
// SIGTERM. Built static, so the image needs nothing else.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	fmt.Println("ecr-kubelet node test: running", os.Args[0])
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	<-stop
}
