"""All configuration, read from the environment (``BEATFORGE_*``) or a ``.env`` file, in one place.

Settings are built by :func:`get_settings` when an entrypoint asks, never at import time, so
importing a module never reads the environment and tests can build their own ``Settings``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from beatforge.bounds import MAX_DURATION_S, MAX_PACK_LOOPS, MIN_DURATION_S


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BEATFORGE_", env_file=".env", env_ignore_empty=True, extra="ignore")

    discord_token: SecretStr | None = None
    #: Sync slash commands to this guild only (instant) instead of globally (up to an hour).
    dev_guild_id: int | None = None

    #: redis://host:port/db, or rediss://[user]:password@host:port/db for TLS (a managed or replicated redis).
    redis_url: str = "redis://localhost:6379/0"
    #: A rediss:// server's certificate is checked against the system's CAs, or against this CA bundle (PEM) when
    #: the server's certificate comes from a private CA.
    redis_ca_file: Path | None = None
    #: Redis Sentinel (a replicated redis that fails over): the sentinels as "host:port,host:port". The master is
    #: the one they name ``redis_sentinel_master``; ``redis_url`` then gives only its database, password and TLS.
    redis_sentinels: str | None = None
    redis_sentinel_master: str = "mymaster"
    #: The arq queue of generation jobs (beats, covers, packs): GPU work. Every kind goes here too unless
    #: ``cpu_queue_name`` splits MIDI and loops off.
    queue_name: str = "beatforge:gpu"
    #: MIDI transcription and loop cutting (CPU work) on a queue of their own, served by workers started with
    #: ``BEATFORGE_WORKER_LANE=cpu``; None = on ``queue_name``, served by every worker (one machine).
    cpu_queue_name: str | None = None
    #: What this worker serves: ``gpu`` takes ``queue_name`` (every kind, unless ``cpu_queue_name`` is set);
    #: ``cpu`` takes ``cpu_queue_name`` (MIDI and loops) and loads no MusicGen or cover model.
    worker_lane: Literal["gpu", "cpu"] = "gpu"
    #: What this worker does: ``generate`` (its lane's queue, as above) or ``train``, which takes only
    #: ``train_queue_name`` (/admin train runs) and loads no generation model (``beatforge worker --roles train``).
    #: One role per process, since an arq worker serves one queue: run one worker of each to have both.
    worker_roles: Literal["generate", "train"] = "generate"
    #: The queue of training runs: only workers with the ``train`` role take them, so a run never holds up beats.
    train_queue_name: str = "beatforge:train"
    #: Biggest zip (MiB) /admin train downloads from Discord, and most its files may unpack to (MiB).
    train_max_upload_mb: float = Field(default=100.0, gt=0, le=2000)
    train_max_unpacked_mb: float = Field(default=500.0, gt=0, le=20000)
    #: Optimizer steps of a run when /admin train is not told (each takes ``batch_size`` windows).
    train_default_steps: int = Field(default=200, ge=1, le=5000)
    #: Longest a training run may take (seconds): arq's job timeout on ``train`` workers (``job_timeout_s`` is the
    #: generation workers'). A train worker runs one run at a time.
    train_job_timeout_s: int = Field(default=6 * 3600, ge=60)
    #: Seconds of audio per training window (clips are cut into these; a clip shorter than one is refused).
    train_window_s: float = Field(default=10.0, gt=0, le=30)
    #: Where trained models are written (``<dir>/<name>``); None = ``models`` beside ``artifact_dir``.
    train_models_dir: Path | None = None
    #: Model affinity: a GPU worker leaves a beat for a model it has not loaded to a live worker that has it, for as
    #: long as loading the model takes and never longer than this (seconds); 0 = first come, first served.
    affinity_wait_s: float = Field(default=30.0, ge=0, le=3600)
    database_url: str = "sqlite+aiosqlite:///./data/beatforge.db"
    artifact_dir: Path = Path("./data/artifacts")

    #: A registry name (small, medium, large, melody, stereo-*, acestep, acestep-base, debug, debug-acestep, or
    #: one registered), a Hugging Face id or a local directory.
    default_model: str = "facebook/musicgen-small"
    #: Custom model registry entries (fine-tunes, LoRA adapters) beside the built-ins and the database's.
    model_registry_file: Path = Path("./data/models.json")
    #: ACE-Step's sampler: denoising steps, guidance (ignored by the guidance-distilled turbo checkpoints) and
    #: the flow-matching shift; ACE-Step 1.5's own defaults.
    acestep_steps: int = Field(default=8, ge=1, le=200)
    acestep_guidance: float = Field(default=7.0, ge=1.0, le=20.0)
    acestep_shift: float = Field(default=3.0, ge=1.0, le=10.0)
    #: GiB the worker's resident music models may take (least recently used evicted beyond it);
    #: 0 = automatic: 80 % of the GPU's memory minus what else is allocated there, or 8 GiB on a CPU.
    model_memory_gb: float = Field(default=0, ge=0)
    #: At most this many music models resident in one worker (each also counts against model_memory_gb).
    model_max_resident: int = Field(default=4, ge=1, le=32)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    #: How often (seconds) the worker asks redis for new jobs; arq's own default is 0.5 s.
    worker_poll_delay_s: float = Field(default=0.05, gt=0, le=5)
    job_timeout_s: int = Field(default=1800, ge=10)
    #: Jobs one worker runs at once: beats waiting together are generated in one batch (generation/batcher.py).
    worker_max_jobs: int = Field(default=8, ge=1, le=64)
    #: How long a beat waits for others to share its batch, and the most takes in one batch.
    batch_wait_s: float = Field(default=0.05, ge=0, le=5)
    max_batch_rows: int = Field(default=16, ge=1, le=64)

    default_duration_s: float = Field(default=15.0, ge=MIN_DURATION_S, le=MAX_DURATION_S)
    #: Once this many seconds of a MusicGen beat exist, they are posted on its status message while the rest is
    #: made (0: no preview). Beats no longer than this, and extensions, get none.
    preview_s: float = Field(default=5.0, ge=0, le=30)
    #: How MusicGen decodes (generation/music/decode.py): auto = CUDA graphs on a GPU, our loop's growing shapes
    #: on a CPU; loop, static or graphs force one of our loop's ways; generate is transformers' own (the reference).
    musicgen_decoding: Literal["auto", "loop", "static", "graphs", "generate"] = "auto"
    fade_out_s: float = Field(default=0.5, ge=0, le=5)
    #: Longest audio a beat may start from (extend or remix a take, continue an upload), seconds.
    continue_max_input_s: float = Field(default=MAX_DURATION_S, ge=1, le=600)

    #: diffusion: draw covers with ``cover_model`` (procedural fallback if it cannot load);
    #: procedural: always the Pillow fallback (CPU-only workers); off: no covers.
    cover_mode: Literal["diffusion", "procedural", "off"] = "diffusion"
    #: A few-step model suits covers: sd-turbo draws 512 px in 1-4 steps without guidance.
    cover_model: str = "stabilityai/sd-turbo"
    #: Optional LoRA (HF id or local dir) for an album-cover look, fused into the pipeline at load.
    cover_lora: str | None = None
    cover_lora_scale: float = Field(default=0.8, ge=0, le=2)
    cover_size: int = Field(default=512, ge=64, le=1024, multiple_of=8)
    cover_steps: int = Field(default=4, ge=1, le=50)
    cover_guidance: float = Field(default=0.0, ge=0, le=20)
    #: Public servers: withhold flagged images (replaced by the procedural cover). Admins may turn it off.
    cover_safety_check: bool = True
    cover_safety_model: str = "CompVis/stable-diffusion-safety-checker"
    #: Memory savers for GPUs shared with MusicGen.
    cover_attention_slicing: bool = False
    cover_cpu_offload: bool = False

    #: Optional LLM (any OpenAI-compatible server) that writes cover scenes, ✨ enhanced beat prompts and
    #: packs' prompts: e.g. https://api.openai.com/v1, or http://localhost:11434/v1 for a local Ollama.
    llm_base_url: str | None = None
    llm_model: str = "gpt-4o-mini"
    llm_api_key: SecretStr | None = None
    llm_timeout_s: float = Field(default=20.0, gt=0, le=300)
    #: Retries after a rate limit (honouring its retry-after), a 5xx or a dropped connection; a job waits
    #: at most (retries + 1) × timeout for the LLM before it falls back to the templates.
    llm_max_retries: int = Field(default=2, ge=0, le=10)

    #: madmom's downbeat networks find loops' first beats and tempo octaves (much better on real music, see
    #: bench/RESULTS.md). They are licensed CC BY-NC-SA 4.0: an operator who sells loops may turn them off, and
    #: the signal cues (kick weight, harmonic change) decide alone.
    learned_downbeats: bool = True

    #: A CLAP model (Hugging Face id such as laion/larger_clap_music, a local directory, or ``debug``: a tiny
    #: random one for tests) that scores how well each take matches its words, shown with every take; it also
    #: enables ``/beat best_of``. None = off. The bot and the workers read the same setting: the bot refuses
    #: best_of without it, and a worker loads it once, on its own device, the first time a beat needs it.
    clap_model: str | None = Field(default=None, min_length=1, max_length=300)

    #: Optional S3-compatible copy of loops and their metadata (None = off). Credentials come only
    #: from the AWS_* environment / boto3's usual chain, never from here.
    s3_bucket: str | None = None
    s3_prefix: str = "beatforge"
    s3_endpoint_url: str | None = None  # None = AWS; e.g. http://minio:9000
    s3_region: str | None = None
    #: Where finished artifacts live for good. local: ``artifact_dir`` itself, which the bot and the workers must
    #: share (one machine, or one volume). s3: the bucket above, under ``<s3_prefix>/<s3_artifact_prefix>/``;
    #: ``artifact_dir`` is then each process's own working area (workers) and download cache (the bot), and a
    #: job is recorded done only once all its files are in the bucket. Big files get presigned links.
    artifact_backend: Literal["local", "s3"] = "local"
    s3_artifact_prefix: str = "artifacts"

    #: Download links for files over Discord's upload limit, served by the bot's small HTTP server. The
    #: address users reach it at (e.g. https://beats.example.com); None = no links and no server.
    public_url: str | None = None
    #: Signs the links (HMAC-SHA256); required with public_url. E.g. `python -c "import secrets;
    #: print(secrets.token_urlsafe(32))"`. Changing it invalidates every link handed out.
    link_secret: SecretStr | None = None
    link_ttl_hours: float = Field(default=72, gt=0, le=24 * 365)
    #: Where the bot's HTTP server listens (behind a reverse proxy that serves public_url, or published directly).
    http_host: str = "0.0.0.0"
    http_port: int = Field(default=8080, ge=0, le=65535)

    #: MIDI transcription (basic-pitch): note-onset and frame-activation thresholds (0..1, lower = more
    #: notes) and the shortest note kept, as basic-pitch names them; defaults are basic-pitch's own.
    midi_onset_threshold: float = Field(default=0.5, gt=0, lt=1)
    midi_frame_threshold: float = Field(default=0.3, gt=0, lt=1)
    midi_min_note_ms: float = Field(default=127.7, ge=10, le=2000)
    #: Longest audio (seconds) /midi and `beatforge midi` accept; longer files are refused before decoding.
    midi_max_input_s: float = Field(default=600.0, ge=10, le=7200)
    #: Biggest upload (MiB) /midi downloads from Discord.
    midi_max_upload_mb: float = Field(default=50.0, gt=0, le=500)
    #: A demucs model (name or local directory with its weights) to split stems; None or not loadable = the
    #: offline harmonic/percussive split, which always works.
    stems_model: str | None = None

    #: Discord user ids allowed every /admin command on every server, beside members with Manage Server
    #: (e.g. BEATFORGE_OWNER_IDS=[1234,5678]).
    owner_ids: list[int] = Field(default_factory=list)
    #: Per-user limits; each server's admins may override them with /admin limits.
    jobs_per_hour: int = Field(default=20, ge=1, le=10_000)
    concurrent_jobs: int = Field(default=3, ge=1, le=100)
    #: Jobs waiting in the queue (all users) beyond which new ones are refused until it drains.
    queue_cap: int = Field(default=100, ge=1, le=100_000)
    #: 🔁 on anyone's result re-rolls it; otherwise only its requester's (and admins') do.
    everyone_can_reroll: bool = False
    #: The most loops one /pack may hold (each is a generation: a pack of 8 costs the queue 8 beats' time).
    pack_max_loops: int = Field(default=8, ge=1, le=MAX_PACK_LOOPS)

    #: How often (seconds) the bot looks for progress and finished jobs.
    watch_interval_s: float = Field(default=1.0, gt=0, le=30)
    #: Status-line edits (queue place, progress): at most this many a second in all, and one job's line at most
    #: every so many seconds, which keeps a busy queue inside Discord's rate limits (final edits always go out).
    status_edits_per_s: float = Field(default=10.0, gt=0, le=40)
    status_edit_every_s: float = Field(default=2.0, ge=0, le=60)
    #: Results posted at once (each job's delivery runs on its own; one slow or failing post delays no other).
    delivery_concurrency: int = Field(default=4, ge=1, le=64)
    #: Tries to post a result (with growing pauses between them) before the user is told to look in /history.
    delivery_max_attempts: int = Field(default=5, ge=1, le=50)

    # Several bot processes on one database (README, "Several bot processes"). Before posting a result a bot claims
    # its row for ``delivery_claim_s`` (renewed while an upload lasts, released when it ends), so no two bots post
    # the same result, and a bot that dies mid-delivery holds it at most that long: shorter than the few minutes
    # Discord remembers a message nonce, so a bot taking over still posts a result the dead one posted only once.
    # ``shard_count`` None: one unsharded process; otherwise discord.py's AutoShardedBot running ``shard_ids``
    # (default: every shard) of ``shard_count``, delivering only its shards' guilds' results (shard 0's process
    # also delivers DMs').
    delivery_claim_s: float = Field(default=60.0, ge=5, le=3600)
    shard_count: int | None = Field(default=None, ge=1, le=10_000)
    #: e.g. BEATFORGE_SHARD_IDS=[0,1] with BEATFORGE_SHARD_COUNT=4 (another process runs [2,3]).
    shard_ids: list[int] | None = None

    @model_validator(mode="after")
    def _shards_within_count(self) -> Settings:
        if self.shard_ids is None:
            return self
        if self.shard_count is None:
            raise ValueError("BEATFORGE_SHARD_IDS needs BEATFORGE_SHARD_COUNT (how many shards there are in all)")
        wrong = sorted(i for i in self.shard_ids if not 0 <= i < self.shard_count)
        if wrong or not self.shard_ids or len(set(self.shard_ids)) != len(self.shard_ids):
            raise ValueError(
                f"BEATFORGE_SHARD_IDS must list distinct shards 0..{self.shard_count - 1} (BEATFORGE_SHARD_COUNT is "
                f"{self.shard_count}), not {self.shard_ids}"
            )
        return self

    #: Times a worker may take a job: a worker that dies mid-job (OOM, SIGKILL) costs one; then it fails.
    job_max_tries: int = Field(default=3, ge=1, le=20)
    #: A running job's heartbeat (seconds between refreshes), and the silence after which its worker is
    #: presumed dead and the reconciler takes the job back.
    job_heartbeat_s: float = Field(default=5.0, gt=0, le=60)
    job_stale_after_s: float = Field(default=30.0, gt=0, le=600)
    #: How often (seconds) each worker reconciles the database with the queue.
    reconcile_interval_s: float = Field(default=10.0, gt=0, le=600)

    #: How often (seconds) each worker reports itself in redis (``beatforge status``, ``/admin status``); a
    #: report lives three intervals, so a dead worker drops off the list within that.
    worker_presence_interval_s: float = Field(default=5.0, gt=0, le=300)
    #: ``beatforge gc``: artifacts of finished jobs older than this many days are removed (0 = kept forever),
    #: and beyond this many GiB of artifacts the oldest go first (0 = no quota). Kept (⭐) jobs and the files
    #: queued or running jobs need are never removed.
    artifact_max_age_days: float = Field(default=30, ge=0, le=36_500)
    artifact_quota_gb: float = Field(default=0, ge=0)

    log_level: str = "INFO"
    log_json: bool = True

    @field_validator("database_url")
    @classmethod
    def _async_sqlite_driver(cls, value: str) -> str:
        # Users paste plain `sqlite:///...` URLs; the app is async throughout and needs aiosqlite.
        if value.startswith("sqlite:"):
            return "sqlite+aiosqlite:" + value.removeprefix("sqlite:")
        return value

    @field_validator("redis_sentinels")
    @classmethod
    def _host_port_list(cls, value: str | None) -> str | None:
        if value is None:
            return None
        for item in value.split(","):
            host, _, port = item.strip().rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"BEATFORGE_REDIS_SENTINELS: {item.strip()!r} is not host:port (e.g. 10.0.0.5:26379)")
        return value

    def sentinel_hosts(self) -> list[tuple[str, int]]:
        """``redis_sentinels`` as (host, port) pairs (empty without Sentinel)."""
        if not self.redis_sentinels:
            return []
        pairs = (item.strip().rpartition(":") for item in self.redis_sentinels.split(","))
        return [(host, int(port)) for host, _, port in pairs]

    @model_validator(mode="after")
    def _cpu_lane_needs_its_queue(self) -> Settings:
        if self.worker_lane == "cpu" and self.cpu_queue_name is None:
            raise ValueError(
                "BEATFORGE_WORKER_LANE=cpu needs BEATFORGE_CPU_QUEUE_NAME (the queue MIDI and loop jobs go to)"
            )
        if self.cpu_queue_name is not None and self.cpu_queue_name == self.queue_name:
            raise ValueError("BEATFORGE_CPU_QUEUE_NAME must differ from BEATFORGE_QUEUE_NAME (or be unset)")
        if self.train_queue_name in (self.queue_name, self.cpu_queue_name):
            raise ValueError("BEATFORGE_TRAIN_QUEUE_NAME must differ from the generation queues")
        return self

    @model_validator(mode="after")
    def _links_need_a_secret(self) -> Settings:
        if self.public_url is None:
            return self
        if not self.public_url.startswith(("http://", "https://")):
            raise ValueError(f"BEATFORGE_PUBLIC_URL must start with http:// or https://, not {self.public_url!r}")
        if self.link_secret is None or len(self.link_secret.get_secret_value()) < 16:
            raise ValueError(
                "BEATFORGE_PUBLIC_URL is set, so BEATFORGE_LINK_SECRET must be too (at least 16 characters; it "
                'signs the download links), e.g. python -c "import secrets; print(secrets.token_urlsafe(32))"'
            )
        return self


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
