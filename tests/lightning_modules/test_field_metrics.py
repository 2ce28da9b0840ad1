import torch

from lightning_modules.field_metrics import FieldTally


def test_top_prediction_share_flags_a_model_that_answers_one_value():
    tally = FieldTally()
    preds = torch.tensor([[0, 1], [0, 2], [0, 1], [1, 0]])
    targets = torch.tensor([[0, 1], [1, 2], [2, 1], [1, 0]])
    none = torch.zeros_like(preds, dtype=torch.bool)
    tally.add(preds, targets, none, none, seconds=1.0)
    fields = tally.compute(["category", "urgency"])["fields"]
    assert fields["category"]["top_prediction_share"] == 0.75
    assert fields["urgency"]["top_prediction_share"] == 0.5
    assert fields["category"]["accuracy"] == 0.5
