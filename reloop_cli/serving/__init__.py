"""The live version over HTTP: the published release, raw request values encoded exactly as
training encodes them, impression and click logs, and the click join that turns them into
training rows."""
