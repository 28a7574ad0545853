from ecr_kubelet.cli import run

run()
