"""The SLURM script hands each node its rank and the main node's address (SLURM's tools stubbed on PATH)."""

import os
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "slurm" / "train.sbatch"

STUBS = {
    "srun": '#!/bin/bash\nwhile [[ "$1" == --* ]]; do shift; done\nexec "$@"\n',
    "scontrol": "#!/bin/bash\nprintf 'gpu-node-07\\ngpu-node-08\\n'\n",
    "nvidia-smi": "#!/bin/bash\nprintf 'GPU 0\\nGPU 1\\nGPU 2\\nGPU 3\\n'\n",
    "accelerate": '#!/bin/bash\necho "ARGS: $*"\n',
}


def run_script(tmp_path: Path, stubs: dict, nnodes: int) -> str:
    for name, body in stubs.items():
        (tmp_path / name).write_text(body)
        (tmp_path / name).chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}", "SLURM_JOB_NODELIST": "gpu-node-[07-08]",
           "SLURM_NNODES": str(nnodes), "SLURM_NODEID": "1"}
    return subprocess.run(["bash", str(SCRIPT), "recipes/r.yaml", "--max_steps", "5"], env=env,
                          capture_output=True, text=True, check=True).stdout


def test_node_rank_and_main_address_come_from_slurm(tmp_path):
    out = run_script(tmp_path, STUBS, nnodes=2)
    args = out.split("ARGS: ", 1)[1].split()
    value = {args[i]: args[i + 1] for i in range(len(args) - 1) if args[i].startswith("--")}
    assert value["--machine_rank"] == "1" and value["--num_machines"] == "2"
    assert value["--num_processes"] == "8"  # 2 nodes x 4 GPUs
    assert value["--main_process_ip"] == "gpu-node-07"
    assert value["--config_file"] == "accelerate_configs/zero2_offload.yaml"
    assert args[-6:] == ["-m", "trl_gsm8k.train", "--config", "recipes/r.yaml", "--max_steps", "5"]


def test_long_host_list_does_not_kill_the_script(tmp_path):
    # A first-line-only reader (`| head -n 1`) under `set -o pipefail` made this exit 141 (SIGPIPE), sometimes.
    many = "#!/bin/bash\nfor i in $(seq -w 0 4999); do echo gpu-node-$i; done\n"
    out = run_script(tmp_path, {**STUBS, "scontrol": many}, nnodes=5000)
    args = out.split("ARGS: ", 1)[1].split()
    assert args[args.index("--main_process_ip") + 1] == "gpu-node-0000"
    assert args[args.index("--num_processes") + 1] == "20000"
