"""``python -m lm.interop import|export``: Hugging Face checkpoints in and out of lm.

  python -m lm.interop import --hf_dir=<dir> --out=<workdir> [--dtype=bfloat16] [--scan_layers] [--overwrite]
  python -m lm.interop export --workdir=<run> --out=<dir> [--stage=sft] [--dtype=bfloat16]
"""

import argparse
import sys

from lm.interop import convert


def main(argv=None):
  p = argparse.ArgumentParser(prog='python -m lm.interop', description=__doc__.split('\n')[0])
  sub = p.add_subparsers(dest='command', required=True)
  imp = sub.add_parser('import', help='a Hugging Face checkpoint directory -> an lm workdir')
  imp.add_argument('--hf_dir', required=True, help='config.json + safetensors (+ tokenizer.model or tokenizer.json)')
  imp.add_argument('--out', required=True, help='the workdir to write (<out>/import/...)')
  imp.add_argument('--dtype', default='float32', help='model.dtype: compute dtype of the matmuls')
  imp.add_argument('--scan_layers', action='store_true', help='model.scan_layers (stacked layer params)')
  imp.add_argument('--max_seq_len', type=int, default=0, help='model.max_seq_len (default: the checkpoint\'s)')
  imp.add_argument('--overwrite', action='store_true',
                   help='replace the import a workdir already holds (written aside, renamed in when complete)')
  exp = sub.add_parser('export', help='a trained lm run -> a Hugging Face checkpoint directory')
  exp.add_argument('--workdir', required=True, help='a run written by lm.launch or by import')
  exp.add_argument('--out', required=True, help='the directory to write')
  exp.add_argument('--stage', default=None,
                   help='which trained stage (default: the latest of rlhf, sft, pretrain, import)')
  exp.add_argument('--dtype', default='float32', help='float32, bfloat16 or float16')
  args = p.parse_args(argv)

  try:
    if args.command == 'import':
      overrides = {'dtype': args.dtype, 'scan_layers': args.scan_layers}
      if args.max_seq_len:
        overrides['max_seq_len'] = args.max_seq_len
      out = convert.import_checkpoint(args.hf_dir, args.out, overwrite=args.overwrite, **overrides)
      tok = out.tokenizer or 'none (the checkpoint has no tokenizer.model or tokenizer.json)'
      print(f'imported {out.family} ({out.metrics["params"]:,} params) into {args.out}/import; tokenizer: {tok}')
    else:
      out = convert.export_checkpoint(args.workdir, args.out, args.stage, args.dtype)
      print(f'exported {args.workdir}/{out["stage"]} as {out["family"]} to {out["out"]}: {", ".join(out["files"])}')
  except (ValueError, FileNotFoundError, FileExistsError, KeyError) as e:
    sys.exit(f'lm.interop: error: {str(e).strip(chr(39))}')


if __name__ == '__main__':
  main()
