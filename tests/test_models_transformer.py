import torch

from maestro.models.transformer import Attention, Block, Stack, attention_mask


def test_attention_matches_plain_softmax_and_has_no_qkv_bias():
    torch.manual_seed(0)
    attention = Attention(32, 2)
    assert attention.qkv.bias is None
    x = torch.randn(2, 5, 32)
    q, k, v = attention.qkv(x).reshape(2, 5, 3, 2, 16).permute(2, 0, 3, 1, 4)
    weights = (q @ k.transpose(-1, -2) / 4.0).softmax(-1)
    expected = attention.proj((weights @ v).transpose(1, 2).reshape(2, 5, 32))
    torch.testing.assert_close(attention(x), expected, atol=1e-5, rtol=1e-5)


def test_key_padding_makes_padded_tokens_invisible():
    torch.manual_seed(0)
    stack = Stack(32, 2, 2, 64).eval()
    x = torch.randn(2, 6, 32)
    key_valid = torch.tensor([[True] * 4 + [False] * 2, [True] * 6])
    out, _ = stack(x, key_valid)
    changed = x.clone()
    changed[0, 4:] = 100 * torch.randn(2, 32)
    out_changed, _ = stack(changed, key_valid)
    torch.testing.assert_close(out_changed[0, :4], out[0, :4])
    torch.testing.assert_close(out_changed[1], out[1])


def test_rows_without_valid_keys_stay_finite():
    mask = attention_mask(torch.tensor([[False, False], [True, False]]))
    assert mask.shape == (2, 1, 1, 2)
    assert mask[0].all() and mask[1].flatten().tolist() == [True, False]
    out, _ = Stack(16, 1, 1, 32)(torch.randn(2, 2, 16), torch.tensor([[False, False], [True, False]]))
    assert torch.isfinite(out).all()


def test_stack_collects_block_outputs_and_ends_with_layernorm():
    torch.manual_seed(0)
    stack = Stack(16, 3, 1, 32).eval()
    x = torch.randn(1, 4, 16)
    out, collected = stack(x, collect={1, 3})
    assert set(collected) == {1, 3}
    torch.testing.assert_close(collected[3], out)
    torch.testing.assert_close(collected[1], stack.blocks[0](x))
    torch.testing.assert_close(out, stack.norm(stack.blocks[2](stack.blocks[1](collected[1]))))


def test_block_is_prenorm_with_timm_mlp():
    block = Block(16, 2, 40, drop_path=0.1)
    assert block.mlp.fc1.out_features == 40
    assert type(block.drop_path).__name__ == "DropPath"
    block.eval()
    x = torch.randn(1, 3, 16)
    manual = x + block.attn(block.norm1(x))
    manual = manual + block.mlp(block.norm2(manual))
    torch.testing.assert_close(block(x), manual)
