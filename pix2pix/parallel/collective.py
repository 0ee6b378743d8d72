"""Data parallelism inside a worker: MindSpore's collective init, rank 0's weights for all, and the
per-step agreement of the ranks (mean losses, stop requests) that keeps them in lockstep."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

import mindspore as ms
import numpy as np
from mindspore import nn, ops

from pix2pix.errors import Pix2PixError

log = logging.getLogger(__name__)

# init() picks the backend from the device; these are the names it uses.
BACKENDS = {"ascend": "HCCL", "gpu": "NCCL", "cpu": "MCCL"}


@dataclass(frozen=True)
class Ranks:
    """This process's place in the job: global rank, number of ranks (devices), index on its machine."""

    rank: int = 0
    size: int = 1
    local: int = 0

    @property
    def writes(self) -> bool:
        """Only rank 0 writes checkpoints, samples, TensorBoard and metrics."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def serve_as_scheduler() -> None:
    """msrun's scheduler process runs the training script too: it only serves the cluster, inside
    init(), which ends the process when the job ends."""
    from mindspore.communication import init

    init()


def init_collective(device: str, device_num: int, local: int) -> Ranks:
    """Join the job's communication group and set DATA_PARALLEL with mean gradients."""
    from mindspore.communication import get_group_size, get_rank, init

    try:
        init()
    except RuntimeError as err:
        first = next((line for line in str(err).splitlines() if line.strip()), type(err).__name__)
        raise Pix2PixError(f"{BACKENDS[device]} init failed: {first}; see the other workers' logs") from None
    ranks = Ranks(rank=get_rank(), size=get_group_size(), local=local)
    if ranks.size != device_num:
        raise Pix2PixError(
            f"parallel.device_num={device_num} but the launcher started {ranks.size} workers; "
            f"set parallel.device_num={ranks.size}"
        )
    ms.set_auto_parallel_context(
        parallel_mode=ms.ParallelMode.DATA_PARALLEL, gradients_mean=True, device_num=ranks.size
    )
    log.info("rank %d of %d (%s, local index %d)", ranks.rank, ranks.size, BACKENDS[device], ranks.local)
    return ranks


def broadcast_parameters(*nets: nn.Cell) -> None:
    """Give every rank rank 0's weights (and BatchNorm statistics): the job starts from one model."""
    broadcast = ops.Broadcast(0)
    for net in nets:
        for param in net.get_parameters():
            (value,) = broadcast((param.value(),))
            param.set_data(value)


class StepAgreement:
    """One small all-reduce per step: the ranks' mean losses (what a single device with the global
    batch would report) and whether any rank was asked to stop. Every rank then takes the same
    decision at the same step: stop and checkpoint, or stop on a non-finite loss."""

    def __init__(self, ranks: Ranks):
        self.ranks = ranks
        self.all_reduce = ops.AllReduce(ops.ReduceOp.SUM) if ranks.distributed else None

    def __call__(self, losses: list[float], stop: bool) -> tuple[list[float], bool]:
        if self.all_reduce is None:
            return losses, stop
        summed = self.all_reduce(ms.Tensor(np.array([*losses, float(stop)], np.float32))).asnumpy()
        return [float(x) / self.ranks.size for x in summed[:-1]], bool(summed[-1] > 0)

    def barrier(self) -> None:
        """Wait for every rank (rank 0 finishing a checkpoint before the others exit)."""
        self([0.0], False)


def parameter_digest(*nets: nn.Cell) -> str:
    """SHA-256 of the trainable parameters' bytes, in their fixed order."""
    digest = hashlib.sha256()
    for net in nets:
        for param in net.trainable_params():
            digest.update(param.asnumpy().tobytes())
    return digest.hexdigest()


def check_in_sync(ranks: Ranks, *nets: nn.Cell) -> None:
    """Verify that every rank of a data-parallel job holds the same trainable parameters.

    The digest goes through the all-reduce as 16 numbers of 16 bits (exact in float32 for up to
    256 ranks): the sum equals size x this rank's numbers only when all ranks agree.
    """
    if not ranks.distributed:
        return
    digest = parameter_digest(*nets)
    chunks = np.frombuffer(bytes.fromhex(digest), dtype=">u2").astype(np.float32)
    summed = ops.AllReduce(ops.ReduceOp.SUM)(ms.Tensor(chunks)).asnumpy()
    if not np.array_equal(summed, chunks * ranks.size):
        raise Pix2PixError(
            f"rank {ranks.rank}: the ranks' parameters differ after training (this rank: sha256 {digest[:16]}); "
            "data-parallel training lost sync: report it with the workers' logs"
        )
    log.info("parameters identical on all %d ranks (sha256 %s)", ranks.size, digest)
