"""Plant one-line wiring errors into a method's file, one at a time, in a scratch copy of the
repository, and run the method's tests against each: a mutant is caught when a test fails.

    .venv/bin/python results/plant_mutants.py [fisor|trac|lspc ...]

The working tree is never modified (the copy lives in a temporary directory). Each mutant is
(file, exact text, replacement, description); the text must occur exactly once. For every mutant
the method's older test file and its reference test are run separately, so the table shows
what the reference test adds. The summary is printed as a Markdown table.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from typing import Dict, List, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
Mutant = Tuple[str, str, str, str]

FISOR = "lspc/methods/fisor.py"
TRAC = "lspc/methods/trac.py"
LSPC = "train_lspc_iql.py"
MUTANTS: Dict[str, List[Mutant]] = {
    "fisor": [
        (FISOR, "qh = self.reach_q_target(states, actions).max(dim=0)", "qh = self.reach_q_target(states, actions).min(dim=0)",
         "weights: min instead of max over the reachability heads"),
        (FISOR, "reach_value_loss = reversed_expectile_loss(", "reach_value_loss = expectile_loss(",
         "V_h: the plain expectile where the reversed one belongs"),
        (FISOR, "ddpm_sample(self.actor_ema,", "ddpm_sample(self.actor,", "acting with the online denoiser, not the EMA one"),
        (FISOR, "x = x + beta.sqrt() * torch.randn(", "x = x + 0.5 * beta.sqrt() * torch.randn(",
         "sampler noise scaled (temperature 0.5)"),
        (FISOR, "qh = self.reach_q_target(states, actions)", "qh = self.reach_q(states, actions)",
         "weights from the online reachability critic"),
        (FISOR, "q = self.q_target(states, actions)", "q = self.q(states, actions)", "weights (and V's target) from the online reward critic"),
        (FISOR, 'self.value(s), h["reward_expectile"])', 'self.value(s), h["reach_expectile"])',
         "reward V trained with the reachability expectile"),
        (FISOR, 'q_td = rewards + h["gamma"] * (1.0 - dones) * self.value(s_next)',
         'q_td = rewards + h["gamma"] * self.value(s_next)', "done mask dropped from the Q target"),
        (FISOR, 'soft_update([self.actor_ema], [self.actor], self.hparams["ema_rate"])',
         'soft_update([self.actor_ema], [self.actor], self.hparams["tau"])', "EMA at the critics' rate tau"),
        (FISOR, "s, a, s_next = states[:m], actions[:m], next_states[:m]",
         "s, a, s_next = states[-m:], actions[-m:], next_states[-m:]",
         "critics' states and actions from the other end of the batch (rewards, costs, dones from the first rows)"),
        (FISOR, "return torch.where(dones > 0, h, backup)", "return backup",
         "terminal case of the reachability target dropped"),
        (FISOR, "best = qh.argmin(dim=1)", "best = qh.argmax(dim=1)", "acting: the riskiest candidate"),
        (FISOR, "qh = self.reach_q_target(states, candidates).max(dim=0)", "qh = self.reach_q_target(states, candidates).min(dim=0)",
         "acting: min over the reachability heads"),
    ],
    "trac": [
        (TRAC, "self.actor.eval()\n        return self.actor(obs)", "self.actor.train()\n        return self.actor(obs)",
         "acting with dropout on"),
        (TRAC, "return self.actor(obs).clamp(self.low, self.high)", "return self.actor(obs)",
         "acting: no clamp to the action box"),
        (TRAC, "log_pi_ref = log_prob(self.reference, obs, actions)", "log_pi_ref = log_prob(self.actor, obs, actions)",
         "scores against the online actor, not the frozen reference"),
        (TRAC, "segment_scores(log_pi, log_pi_ref, self.alpha, self.discounts)",
         "segment_scores(log_pi, log_pi_ref, self.alpha, torch.ones_like(self.discounts))",
         "segment score not discounted"),
        (TRAC, "(self.step - self.bc_steps + 1) / self.warmup_steps", "(self.step - self.bc_steps) / self.warmup_steps",
         "warm-up off by one (first classification step at lr 0)"),
        (TRAC, "        self.optimizer = torch.optim.Adam(self.actor.parameters(), lr=0.0)\n", "",
         "no fresh Adam at the switch (BC's moments carry over)"),
        (TRAC, "return -(actor(obs) - actions).square().sum(-1)", "return -(actor(obs) - actions).square().mean(-1)",
         "log pi: mean over action dims instead of the sum"),
        (TRAC, "loss = -(coef * weight * log_lik).mean()", "loss = -(coef * log_lik).mean()",
         "segment weights dropped from the loss"),
        (TRAC, "undesirable_coef = eta * y.sum() / n_undesirable.clamp(min=1)",
         "undesirable_coef = eta * n_undesirable / y.sum().clamp(min=1)", "undesirable coefficient inverted"),
        (TRAC, "if self.step == self.bc_steps:", "if self.step == self.bc_steps + 1:",
         "reference frozen one step late"),
        (TRAC, 'self.alpha, self.eta = float(h["alpha"]), float(h["eta"])',
         'self.alpha, self.eta = float(h["eta"]), float(h["alpha"])', "alpha and eta swapped"),
        (TRAC, "classifying = self.step >= self.bc_steps", "classifying = self.step > self.bc_steps",
         "one BC step too many before classifying"),
    ],
    "lspc": [
        (LSPC, "torch.max(*self.cost_q_target.both(s, a))", "torch.min(*self.cost_q_target.both(s, a))",
         "cost critic: min instead of max over the heads"),
        (LSPC, "q_target = torch.min(*self.q_target.both(s, a))", "q_target = torch.max(*self.q_target.both(s, a))",
         "reward critic: max instead of min over the heads"),
        (LSPC, "q_target = torch.min(*self.q_target.both(s, a))", "q_target = torch.min(*self.q.both(s, a))",
         "reward V's target (and the reward weights) from the online Q"),
        (LSPC, "expectile_loss(cost_v_used - cost_q_target, cfg.iql_tau)", "expectile_loss(cost_q_target - cost_v_used, cfg.iql_tau)",
         "cost V: u = Qc - Vc (upper expectile) instead of Vc - Qc"),
        (LSPC, "c + cfg.discount * not_done * next_cost_v", "c + cfg.discount * next_cost_v",
         "done mask dropped from the cost Q target"),
        (LSPC, "next_cost_v = self.cost_value(s_next).clamp(min=0.0)", "next_cost_v = self.cost_value(s_next)",
         "next-state Vc of the cost target not clamped at 0"),
        (LSPC, "exp_weight(cost_value - cost_q, temperature, max_weight)", "exp_weight(cost_q - cost_value, temperature, max_weight)",
         "cost-advantage weight with the sign flipped (riskier actions weigh more)"),
        (LSPC, "(w_reward, w_cost) if cfg.converse else (w_cost, w_reward)", "(w_cost, w_reward) if cfg.converse else (w_reward, w_cost)",
         "CVAE and safety-encoder weights swapped"),
        (LSPC, 'kl.mean(dim=-1) if reduction == "mean" else kl.sum(dim=-1)', 'kl.sum(dim=-1) if reduction == "mean" else kl.mean(dim=-1)',
         "KL reduction switch reversed"),
        (LSPC, "[self.q, self.cost_q], self.cfg.tau)", "[self.q, self.cost_q], 1 - self.cfg.tau)",
         "Polyak rate 1 - tau"),
        (LSPC, 'z = z.clamp(-eps, eps) if self.cfg.lspc_s_sampling == "clamp"', 'z = z if self.cfg.lspc_s_sampling == "clamp"',
         "LSPC-S: latent not restricted to the box"),
        (LSPC, "self.safety_encoder.sample(obs, self.cfg.max_latent_action, generator, deterministic)",
         "self.safety_encoder.sample(obs, self.cfg.vae_clamper, generator, deterministic)",
         "LSPC-O squashed with eps_S instead of eps_O"),
        (LSPC, "return eps_o * torch.tanh(mean)", "return torch.tanh(mean)", "deterministic LSPC-O without eps_O"),
        (LSPC, "return mean, log_std.clamp(*ENCODER_LOG_STD)", "return mean, log_std",
         "CVAE encoder's log_std not clamped"),
        (LSPC, "return mean, log_std.clamp(*SAFETY_ENCODER_LOG_STD)", "return mean, log_std",
         "latent safety encoder's log_std not clamped"),
    ],
}
TESTS = {"fisor": ("tests/test_fisor.py", "tests/test_reference_fisor.py"),
         "trac": ("tests/test_trac.py", "tests/test_reference_trac.py"),
         "lspc": ("tests/test_losses.py", "tests/test_reference_lspc.py")}


def copy_tree(dest: str) -> None:
    """The tracked and untracked (not ignored) files of the repository."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True,
                            check=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src = os.path.join(ROOT, rel)
        if os.path.isfile(src):
            os.makedirs(os.path.dirname(os.path.join(dest, rel)), exist_ok=True)
            shutil.copy2(src, os.path.join(dest, rel))


def passes(copy: str, test: str) -> bool:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", test], cwd=copy,
                            env=env, capture_output=True, text=True)
    return result.returncode == 0


def main(methods: List[str]) -> int:
    escaped = 0
    with tempfile.TemporaryDirectory() as copy:
        copy_tree(copy)
        for method in methods:
            old_tests, new_test = TESTS[method]
            assert passes(copy, new_test) and passes(copy, old_tests), f"{method}: the unmutated tests fail"
            print(f"\n{method}: {len(MUTANTS[method])} mutants\n")
            print(f"| # | planted error ({MUTANTS[method][0][0] if MUTANTS[method] else ''}) | {old_tests} | {new_test} |")
            print("|---|---|---|---|")
            for number, (rel, text, replacement, description) in enumerate(MUTANTS[method], 1):
                path = os.path.join(copy, rel)
                with open(path, encoding="utf-8") as f:
                    original = f.read()
                assert original.count(text) == 1, f"{method} mutant {number}: {text!r} occurs {original.count(text)} times"
                with open(path, "w", encoding="utf-8") as f:
                    f.write(original.replace(text, replacement))
                try:
                    verdicts = ["passes (missed)" if passes(copy, test) else "fails (caught)"
                                for test in (old_tests, new_test)]
                finally:
                    with open(path, "w", encoding="utf-8") as f:
                        f.write(original)
                escaped += verdicts[1].startswith("passes")
                shown = [" ".join(part.split()) or "(deleted)" for part in (text, replacement)]
                print(f"| {number} | {description}: `{shown[0]}` -> `{shown[1]}` | {verdicts[0]} | {verdicts[1]} |",
                      flush=True)
    return 1 if escaped else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or list(MUTANTS)))
