"""Load every ``*.yaml`` / ``*.yml`` file of a folder as a pipeline of ORG/PROJECT."""

from pathlib import Path

from django.core.management.base import BaseCommand

from pipelines.cli import user_named
from pipelines.loaders import load_project
from pipelines.models import Organization, Project
from pipelines.services import save_pipeline
from pipelines.spec.errors import SpecError, SpecErrors
from stageline.errors import Invalid, refusals_exit_2


class Command(BaseCommand):
    help = "Create or update one pipeline per YAML file; exit 2 if any file was refused."

    def add_arguments(self, parser):
        parser.add_argument("project", metavar="ORG/PROJECT")
        parser.add_argument("directory", metavar="DIR")
        parser.add_argument("--as", dest="as_user", help="check that this user may edit pipelines")

    @refusals_exit_2
    def handle(self, *args, project, directory, as_user=None, **options):
        org_slug, sep, project_slug = project.partition("/")
        if not sep or not org_slug or not project_slug or "/" in project_slug:
            raise Invalid(f"'{project}' is not ORG/PROJECT")
        folder = Path(directory)
        if not folder.is_dir():
            raise Invalid(f"{directory} is not a folder")
        user = user_named(as_user) if as_user else None
        if user is not None:
            # Acting for a user: the project must exist and the user must be allowed to edit it.
            proj = load_project(user, org_slug, project_slug, "change")
        else:
            proj = Project.objects.filter(organization__slug=org_slug, slug=project_slug).first()
        if proj is None:
            org, _ = Organization.objects.get_or_create(
                slug=org_slug, defaults={"name": org_slug.title()}
            )
            proj, _ = Project.objects.get_or_create(
                organization=org,
                slug=project_slug,
                defaults={"name": project_slug.replace("-", " ").title()},
            )
        files = sorted(p for p in folder.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
        refused = 0
        for number, path in enumerate(files, 1):
            # Progress on long loads (over 20 files: a few seconds or more): "[3/120] name: ...".
            at = f"[{number}/{len(files)}] " if len(files) > 20 else ""
            try:
                try:
                    text = path.read_text(encoding="utf-8")
                except UnicodeDecodeError as exc:
                    raise SpecErrors(
                        [
                            SpecError(
                                f"the file is not UTF-8 text ({exc.reason} at byte {exc.start})"
                            )
                        ]
                    ) from None
                result = save_pipeline(project=proj, yaml_text=text, user=user)
            except SpecErrors as exc:
                refused += 1
                self.stderr.write(f"{at}{path.name}: refused")
                for error in exc.errors:
                    self.stderr.write(
                        f"  {path.name}:{error.line}: {error.message}"
                        if error.line
                        else f"  {path.name}: {error.message}"
                    )
                continue
            state = (
                "created"
                if result.created_pipeline
                else ("updated" if result.created_version else "unchanged")
            )
            self.stdout.write(
                f"{at}{path.name}: {result.pipeline.identifier} v{result.version.number} {state}"
            )
            for warning in result.warnings:
                self.stdout.write(f"  {path.name}:{warning.line}: warning: {warning.message}")
        if refused:
            raise Invalid(f"{refused} of {len(files)} file(s) refused")
