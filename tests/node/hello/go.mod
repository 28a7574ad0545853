module ecr-kubelet.test/hello

go 1.22
