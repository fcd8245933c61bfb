//! `worker`: parses flags, starts logging, hands over to the library.

use anyhow::Context;
use clap::Parser;
use worker::cli::{Cli, Command, Format, TrainArgs};
use worker::train::{Epoch, Trial};
use worker::{data, device};

fn main() {
    // First: it may restart the process (worker::malloc).
    worker::malloc::tune();
    let cli = Cli::parse();
    stdx::logging::init();
    if let Err(e) = worker::mkl::check() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
    let result = match cli.command {
        Command::Train(args) => train(args),
        Command::Join(args) if worker::slots::is_supervisor(&args) => {
            worker::slots::supervise(&args).map_err(anyhow::Error::from)
        }
        Command::Join(args) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("starting the async runtime")
            .and_then(|rt| {
                rt.block_on(worker::join::run(args))
                    .map_err(anyhow::Error::from)
            }),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn train(args: TrainArgs) -> anyhow::Result<()> {
    let h = args.hyperparams().map_err(anyhow::Error::msg)?;
    let dev = device::parse_device(&args.device)?;
    device::set_threads(args.threads);
    let dir = dataset::locate(args.data.data_dir.as_deref())?;
    let data = dataset::load(&dir)?;
    let subset = data::Subset {
        train: args.data.train_limit,
        test: args.data.test_limit,
    };
    let mut trial = Trial::new(&h, &data, subset, dev)?;
    drop(data);
    if args.format == Format::Text {
        println!(
            "trial {} ({}) on {}, {} thread(s): {} train / {} validation / {} test images",
            h.trial_id(),
            h.label(),
            device::device_name(dev),
            args.threads,
            trial.splits.train.len(),
            trial.splits.validation.as_ref().map_or(0, |v| v.len()),
            trial.splits.test.len()
        );
    }
    let format = args.format;
    trial.run(&mut |e: &Epoch<'_>| {
        let m = &e.metrics;
        match format {
            Format::Json => {
                let mut obj = serde_json::to_value(m).expect("json of plain data");
                obj["threads"] = e.threads.into();
                println!("{obj}")
            }
            Format::Text => println!(
                "epoch {:>3}  train loss {:.4} acc {:.4} | val loss {:.4} acc {:.4} | test loss {:.4} acc {:.4} | {:.2}s",
                m.epoch, m.train_loss, m.train_acc, m.val_loss, m.val_acc, m.test_loss, m.test_acc, m.seconds
            ),
        }
        Ok(())
    })?;
    if let Some(out) = &args.out {
        trial
            .save_artifacts(out, serde_json::json!({ "threads": args.threads }))
            .with_context(|| format!("writing artifacts to {}", out.display()))?;
        if format == Format::Text {
            println!("artifacts written to {}", out.display());
        }
    }
    Ok(())
}
