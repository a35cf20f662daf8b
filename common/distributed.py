"""torch.distributed plumbing shared by the scripts (CleanRL's ppo_atari_multigpu / nanoGPT style).

Launched by torchrun, a script sees RANK / LOCAL_RANK / WORLD_SIZE. One process is one rank; the
process group exists only when WORLD_SIZE > 1, so `python script.py` stays plain single-process code.
Backend: NCCL on CUDA, gloo on CPU.
"""

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from common.errors import UsageError


@dataclass
class Dist:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: str = "auto") -> Dist:
    """Read torchrun's variables, pick the device and start the process group when needed."""
    rank = int(os.environ.get("RANK", 0))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda"):
        raise UsageError(f"--device must be one of auto, cpu, cuda (got {device!r})")
    if device == "cuda":
        if not torch.cuda.is_available():
            raise UsageError("--device cuda: no CUDA device here (torch.cuda.is_available() is False); use --device cpu or auto")
        torch.cuda.set_device(local_rank)
        torch_device = torch.device("cuda", local_rank)
    else:
        torch_device = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device == "cuda" else "gloo")
    return Dist(rank, local_rank, world_size, torch_device)


def broadcast_parameters(module: torch.nn.Module) -> None:
    """Make every rank start from rank 0's weights (and buffers)."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    for tensor in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(tensor.data, src=0)


def all_reduce_gradients(params: list[torch.nn.Parameter]) -> None:
    """Average gradients over ranks with ONE flattened all-reduce (ppo_atari_multigpu style). Parameters sharded
    by FSDP (DTensors) are skipped: their gradients were averaged by its reduce-scatter during backward."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    from torch.distributed.tensor import DTensor

    params = [p for p in params if not isinstance(p, DTensor)]  # FSDP shards: reduce-scattered in backward already
    if not params:
        return
    world_size = dist.get_world_size()
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= world_size
    offset = 0
    for p, g in zip(params, grads):
        n = g.numel()
        p.grad = flat[offset : offset + n].view_as(p).clone()
        offset += n


def all_reduce_sum(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """Sum a dict of scalars over ranks (counts, totals)."""
    if not (dist.is_available() and dist.is_initialized()) or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return dict(zip(keys, t.tolist()))


def all_reduce_mean(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """Average a dict of scalar statistics over ranks (for logging)."""
    return {k: v / world_size() for k, v in all_reduce_sum(values, device).items()}


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def parameters_in_sync(module: torch.nn.Module, device: torch.device) -> bool:
    """True when every rank holds bit-identical parameters (compares one fp64 checksum per rank)."""
    if not (dist.is_available() and dist.is_initialized()):
        return True
    if is_sharded(module):
        return sharded_parameters_in_sync(module, device)
    with torch.no_grad():
        flat = torch.cat([p.detach().double().reshape(-1) for p in module.parameters()])
        weights = torch.arange(1, flat.numel() + 1, device=flat.device, dtype=torch.float64).sin()
        checksum = torch.stack([flat.sum(), (flat * weights).sum()]).to(device)
    gathered = [torch.zeros_like(checksum) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, checksum)
    return all(torch.equal(g, gathered[0]) for g in gathered)


# ---- FSDP2: the policy sharded over the ranks (--fsdp: full --train-vlm at 3B) -------------------------
# Only the update runs sharded. The rollout and the eval run on a full copy gathered on every rank (unsharded):
# ranks there take different numbers of model calls (time-limit bootstraps, episodes that end early), which
# FSDP's per-layer collectives would not survive. In fp32 the copy computes the very numbers the shards do.
# The policy's own code calls each transformer layer's parts (norms, q/k/v/o projections, MLP) one by one,
# not layer.forward, and the scripts call encode / velocity, not policy.forward. So every layer's parts are
# ONE fully_shard group (fully_shard([parts]): all-gathered when the first part runs, freed after the last),
# the SigLIP layers are sharded whole (their forward runs), and the root (embeddings, projector, final norms,
# action / time heads, the tied lm_head) gets encode / velocity / velocity_full as its forward methods.
def is_sharded(module: torch.nn.Module) -> bool:
    """True when fully_shard has turned the module's parameters into DTensor shards."""
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in module.parameters())


def _layer_parts(layer: torch.nn.Module) -> list[torch.nn.Module]:
    """The modules of one Gemma layer that the policy calls: norms, MLP and the attention's projections."""
    return [m for name, m in layer.named_children() if name != "self_attn"] + list(layer.self_attn.children())


def shard_policy(policy: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """fully_shard (FSDP2) the policy in place over all ranks, in fp32: per VLM layer, per expert layer, per SigLIP
    layer, and the root. Call after broadcast_parameters (every rank cuts its shard from the same full weights)
    and before the optimizer is built. Gradients come back averaged over ranks (reduce-scatter) and sharded."""
    import warnings

    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

    # encode / velocity return views (KV cache, action-token features); no caller edits them in place
    warnings.filterwarnings("ignore", message="FSDP2-wrapped module .* returned a view tensor")
    mesh = init_device_mesh(device.type, (world_size(),))
    for layer in policy.paligemma_with_expert.paligemma.model.vision_tower.vision_model.encoder.layers:
        fully_shard(layer, mesh=mesh)
    for layer in list(policy._vlm.layers) + list(policy._expert.layers):
        fully_shard(_layer_parts(layer), mesh=mesh)
    fully_shard(policy, mesh=mesh)
    for method in ("encode", "velocity", "velocity_full"):
        register_fsdp_forward_method(policy, method)
    return policy


def local_tensor(t: torch.Tensor) -> torch.Tensor:
    """This rank's shard of a DTensor (the tensor itself otherwise)."""
    return t.to_local() if hasattr(t, "to_local") else t


def clip_grad_norm(params, max_norm: float) -> float:
    """nn.utils.clip_grad_norm_ that returns the GLOBAL norm as a float, also for FSDP shards (DTensors) and for
    a list that mixes them with plain parameters (θ' of flow_noise_ppo). Without shards: clip_grad_norm_ itself."""
    params = [p for p in params if p.grad is not None]
    shards = [p for p in params if hasattr(p.grad, "to_local")]
    if not shards:
        return torch.nn.utils.clip_grad_norm_(params, max_norm).item()
    plain = [p for p in params if not hasattr(p.grad, "to_local")]
    device = shards[0].grad.to_local().device
    sq = torch.stack([p.grad.to_local().float().square().sum() for p in shards]).sum()
    dist.all_reduce(sq, op=dist.ReduceOp.SUM)                   # Σ over every rank's shard
    if plain:                                                   # replicated: the same on every rank, counted once
        sq = sq + torch.stack([p.grad.detach().float().to(device).square().sum() for p in plain]).sum()
    total = sq.sqrt()
    coef = torch.clamp(max_norm / (total + 1e-6), max=1.0).item()  # torch's clip_coef_clamped
    for p in params:
        p.grad.mul_(coef)
    return total.item()


def _full_state(module: torch.nn.Module, everywhere: bool) -> dict:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=not everywhere))


def full_policy_copy(policy: torch.nn.Module, everywhere: bool = False):
    """Collective: the sharded policy's full weights in a plain (unsharded) copy of the same class, without
    gradients. everywhere=False: on rank 0 only, on the CPU (for save_policy: the user's format exactly as
    without FSDP), None on the other ranks; everywhere=True: on every rank, on its device (the rollout and the
    eval run on it: they hold no FSDP collective, so ranks may take different numbers of model calls). Ties
    (PaliGemma's lm_head = embed_tokens) are kept, so save_policy writes the same keys."""
    from torch.distributed.fsdp import FSDPModule

    full = _full_state(policy, everywhere)
    if not everywhere and rank() != 0:
        return None
    cls = next(c for c in type(policy).__mro__ if not issubclass(c, FSDPModule))  # PI0Policy, not FSDPPI0Policy
    with torch.device("meta"):
        copy = cls(policy.config)
    copy.load_state_dict(full, assign=True)
    for name, buf in policy.named_buffers():  # buffers are not sharded; those outside state_dict are still on meta
        module, _, leaf = name.rpartition(".")
        if copy.get_buffer(name).is_meta:
            copy.get_submodule(module)._buffers[leaf] = buf.detach().clone().to("cpu" if not everywhere else buf.device)
    names = {}
    for name, p in policy.named_parameters(remove_duplicate=False):
        names.setdefault(id(p), []).append(name)
    for tied in (group for group in names.values() if len(group) > 1):
        owner = copy.get_parameter(tied[0])
        for name in tied[1:]:
            module, _, leaf = name.rpartition(".")
            setattr(copy.get_submodule(module), leaf, owner)
    return copy.requires_grad_(False).train(policy.training)


def unsharded(policy: torch.nn.Module) -> torch.nn.Module:
    """The policy for code that must not hold FSDP collectives (rollout, eval): a full copy on every rank when it
    is sharded (collective), else the policy itself."""
    return full_policy_copy(policy, everywhere=True).eval() if is_sharded(policy) else policy


def optimizer_state(optimizer, modules: dict) -> dict:
    """The optimizer's state for train_state.pt. modules: {name: module} of every module it trains. With an FSDP
    policy (collective): the full (unsharded) state keyed by parameter name (torch.distributed.checkpoint), on
    rank 0 ({} elsewhere); without: optimizer.state_dict()."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    if not any(is_sharded(m) for m in modules.values()):
        return optimizer.state_dict()
    return get_optimizer_state_dict(torch.nn.ModuleDict(modules), optimizer,
                                    options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_optimizer_state(optimizer, modules: dict, state: dict) -> None:
    """Restore what optimizer_state saved; with FSDP every rank reads the full state and keeps its shard."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    if not any(is_sharded(m) for m in modules.values()):
        return optimizer.load_state_dict(state)
    set_optimizer_state_dict(torch.nn.ModuleDict(modules), optimizer, state, options=StateDictOptions(full_state_dict=True))


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when `flag` is True on at least one."""
    return all_reduce_sum({"flag": float(bool(flag))}, device)["flag"] > 0


def max_over_ranks(value: int, device: torch.device) -> int:
    if world_size() == 1:
        return int(value)
    t = torch.tensor([int(value)], dtype=torch.int64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


def sharded_parameters_in_sync(module: torch.nn.Module, device: torch.device) -> bool:
    """parameters_in_sync for an FSDP policy: the full parameters each rank gathers (DTensor.full_tensor, one
    tensor at a time) and its own unsharded ones (buffers, plain parameters) give the same checksums everywhere."""
    sums = torch.zeros(2, dtype=torch.float64, device=device)
    with torch.no_grad():
        for t in list(module.parameters()) + list(module.buffers()):
            flat = (t.full_tensor() if hasattr(t, "full_tensor") else t).detach().to(device, torch.float64).reshape(-1)
            weights = torch.arange(1, flat.numel() + 1, device=device, dtype=torch.float64).sin()
            sums += torch.stack([flat.sum(), (flat * weights).sum()])
    gathered = [torch.zeros_like(sums) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, sums)
    return all(torch.equal(g, gathered[0]) for g in gathered)
