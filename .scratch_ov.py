import faulthandler, sys, time
faulthandler.dump_traceback_later(100, exit=True)
from pathlib import Path
from spikebatch.worker import recording
from spikebatch.worker.jobkw import job_kwargs
from bench.serve import serving
from spikeinterface.extractors import read_nwb_recording
from spikeinterface.core import write_binary_recording
nwb=Path('/tmp/pb/gt/ground_truth.nwb')
if __name__ == "__main__":
    with serving("dandi", nwb, 100e6) as srv:
        meta=srv["metadata"]
        print("served", flush=True)
        t=time.time()
        rec=read_nwb_recording(file_path=meta["contentUrl"][1], stream_mode="fsspec", electrical_series_path="acquisition/ElectricalSeries")
        print("open", time.time()-t, flush=True)
        out=Path('/tmp/pb/o3.dat'); out.unlink(missing_ok=True)
        write_binary_recording(rec, file_paths=[out], dtype="int16", **job_kwargs())
        print("done", time.time()-t, flush=True)
