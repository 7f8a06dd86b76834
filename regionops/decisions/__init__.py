"""Pure failover and repair decisions: observed state in, a decision with a reason out.

Modelled on Patroni's ha.py: deciding is separated from acting.  Nothing here performs
I/O, reads the clock or imports Prefect; flows observe, call these, and act on the result.
Each decision is a frozen pydantic model whose ``reason`` is a sentence for the human on call.
"""

from regionops.decisions.dataloss import DataLossEstimate, FailoverLoss, assess_failover_loss, estimate_data_loss
from regionops.decisions.failure import PrimaryDownDecision, ProbeOutcome, decide_primary_down
from regionops.decisions.primary import PrimaryView, find_primary
from regionops.decisions.promotion import CandidateRank, PromotionDecision, choose_promotion_candidate
from regionops.decisions.repair import Escalation, RepairAction, RepairDecision, decide_repair, escalate_repair
from regionops.decisions.switchover import (
    SwitchoverCheck,
    SwitchoverRecovery,
    check_switchover,
    decide_switchover_recovery,
)

__all__ = [
    "CandidateRank",
    "DataLossEstimate",
    "Escalation",
    "FailoverLoss",
    "PrimaryDownDecision",
    "PrimaryView",
    "ProbeOutcome",
    "PromotionDecision",
    "RepairAction",
    "RepairDecision",
    "SwitchoverCheck",
    "assess_failover_loss",
    "check_switchover",
    "decide_switchover_recovery",
    "SwitchoverRecovery",
    "choose_promotion_candidate",
    "decide_primary_down",
    "decide_repair",
    "escalate_repair",
    "estimate_data_loss",
    "find_primary",
]
